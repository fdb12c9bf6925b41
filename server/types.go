package server

// ResourceTypes are the FHIR resource types the bridge serves when it has
// a store (without one, DiagnosticReport, Binary create and AuditEvent are
// not served). The SMART token endpoint refuses scopes for any other type;
// a test keeps the list equal to the CapabilityStatement's.
var ResourceTypes = []string{
	"ServiceRequest", "Patient", "Practitioner", "Organization",
	"DocumentReference", "Binary", "DiagnosticReport",
	"Communication", "Flag", "AuditEvent",
}
