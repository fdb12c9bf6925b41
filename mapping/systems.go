package mapping

// Base is the namespace of every system and extension the bridge defines
// itself.
const Base = "https://qubs-fhir-bridge.github.io/fhir/"

// Identifier and code systems defined by the bridge.
const (
	// SystemAppointmentID is the system of the QUBS appointment id on
	// ServiceRequest.identifier (type FILL). It is the same for every
	// domain: the FHIR base already names the domain, and the domain is
	// also kept in ExtDomain.
	SystemAppointmentID = Base + "NamingSystem/appointment-id"
	// SystemPatientID is the system of the QUBS patient id on
	// Patient.identifier (type MR).
	SystemPatientID = Base + "NamingSystem/patient-id"
	// SystemUsername is the system of a QUBS username on
	// Practitioner.identifier.
	SystemUsername = Base + "NamingSystem/username"
	// SystemServiceItem is the code system of service item numbers in
	// ServiceRequest.code.coding. QUBS documents no service item fields;
	// Australian practices use Medicare Benefits Schedule item numbers, but
	// no published FHIR code system for MBS items could be confirmed, so
	// the bridge uses its own rather than assert one.
	SystemServiceItem = Base + "CodeSystem/service-item"
)

// Extensions defined by the bridge. Each one keeps a QUBS value that has
// no faithful home in the base resource.
const (
	// ExtDomain (ServiceRequest, valueString) is the QUBS domain.
	ExtDomain = Base + "StructureDefinition/qubs-domain"
	// ExtStatus (ServiceRequest, valueString) is the QUBS appointment
	// status exactly as sent; ServiceRequest.status is lossy.
	ExtStatus = Base + "StructureDefinition/qubs-status"
	// ExtPriority (ServiceRequest, valueString) is the QUBS priority when
	// it is not exactly a FHIR request-priority code.
	ExtPriority = Base + "StructureDefinition/qubs-priority"
	// ExtReportNeededBy (ServiceRequest, valueDateTime) is the reporting
	// deadline.
	ExtReportNeededBy = Base + "StructureDefinition/report-needed-by"
	// ExtServiceItem (ServiceRequest, valueString, repeating, in QUBS
	// order) is the raw JSON of one service item, so that keys the bridge
	// does not know are never lost.
	ExtServiceItem = Base + "StructureDefinition/qubs-service-item"
	// ExtServiceItemCount (ServiceRequest, valueUnsignedInt) is the length
	// of serviceItems; present whenever QUBS sent the array, even empty,
	// so that an empty list and an absent one stay distinct.
	ExtServiceItemCount = Base + "StructureDefinition/qubs-service-item-count"
	// ExtReferringClinic (ServiceRequest, valueReference to Organization)
	// is the referring clinic. R4 allows one requester; that is the
	// referring doctor when there is one, so the clinic always goes here.
	ExtReferringClinic = Base + "StructureDefinition/referring-clinic"
	// ExtDerivedText (CodeableConcept, valueBoolean true) marks a text the
	// bridge made up because QUBS had none (ServiceRequest.code.text when
	// studyDescription is empty).
	ExtDerivedText = Base + "StructureDefinition/derived-text"
	// ExtAppointmentDate, ExtStartTime and ExtEndTime (ServiceRequest,
	// valueString) keep appointmentDate, startTime and endTime verbatim
	// when they could not be placed in occurrence[x]: malformed, or a time
	// without a date.
	ExtAppointmentDate = Base + "StructureDefinition/qubs-appointment-date"
	ExtStartTime       = Base + "StructureDefinition/qubs-start-time"
	ExtEndTime         = Base + "StructureDefinition/qubs-end-time"
	// ExtGender (Patient, valueString) is the QUBS gender when it is not
	// exactly the FHIR administrative-gender code it maps to.
	ExtGender = Base + "StructureDefinition/qubs-gender"
	// ExtDateOfBirth (Patient, valueString) keeps a dateOfBirth that is not
	// a valid FHIR date.
	ExtDateOfBirth = Base + "StructureDefinition/qubs-date-of-birth"
	// ExtInitials (Practitioner, valueString) is a QUBS user's initials.
	ExtInitials = Base + "StructureDefinition/qubs-initials"
	// ExtUserRole (Practitioner, valueString) is a QUBS user's role, e.g.
	// "Radiologist". It is a QUBS account role, not a qualification.
	ExtUserRole = Base + "StructureDefinition/qubs-user-role"
	// ExtOriginal (ServiceRequest, DocumentReference, Communication, Flag;
	// complex, repeating) keeps a QUBS string that FHIR cannot carry as it
	// is: one holding control characters (FHIR strings allow only tab, CR
	// and LF below U+0020) or invalid UTF-8; and, outside ServiceRequest, a
	// date-time in year 0000, which FHIR cannot write (left out of the
	// resource). The FHIR output carries the string with each such
	// character replaced by U+FFFD;
	// this extension has the QUBS field name in sub-extension "field"
	// (valueString, e.g. "clinicalInfo", "radiologistUser.firstName",
	// "serviceItems[2]") and the exact bytes in "value" (valueBase64Binary).
	ExtOriginal = Base + "StructureDefinition/qubs-original"
)

// External systems, spelled exactly as the specifications spell them.
const (
	SystemSNOMED           = "http://snomed.info/sct"
	SystemDICOM            = "http://dicom.nema.org/resources/ontology/DCM"
	SystemDICOMUID         = "urn:dicom:uid"
	SystemV2IdentifierType = "http://terminology.hl7.org/CodeSystem/v2-0203"
	// ExtDataAbsentReason is the core extension used on
	// ServiceRequest.subject when QUBS sent no patient data at all
	// (subject is 1..1 in R4).
	ExtDataAbsentReason = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
)

// SNOMEDImagingProcedure is the ServiceRequest.category code, as AU
// eRequesting and IHE use it.
const SNOMEDImagingProcedure = "363679005"

// Systems and extensions of the report, document and comment mappings
// (report.go, documents.go, comments.go); MAPPING.md has the tables.
const (
	// SystemReportGUID is the system of the QUBS reportGuid on
	// DiagnosticReport.identifier (type FILL), present once QUBS accepted
	// the report.
	SystemReportGUID = Base + "NamingSystem/report-guid"
	// SystemAttachmentGUID is the system of a QUBS attachment guid on
	// DocumentReference.identifier.
	SystemAttachmentGUID = Base + "NamingSystem/attachment-guid"
	// SystemCommentGUID is the system of a QUBS comment guid on
	// Communication.identifier and Flag.identifier.
	SystemCommentGUID = Base + "NamingSystem/comment-guid"
	// SystemCommentType is the bridge's code system for the QUBS comment
	// types AC, AA, PC and PA (Communication.category, Flag.category).
	SystemCommentType = Base + "CodeSystem/comment-type"

	// ExtDeliveryState (DiagnosticReport, valueCode pending|delivered|failed)
	// is how far the bridge got delivering the report to QUBS. The bridge
	// sets it on every read; a client's own value is dropped.
	ExtDeliveryState = Base + "StructureDefinition/delivery-state"
	// ExtDeliveredAt (DiagnosticReport, valueInstant) is when QUBS accepted
	// the report.
	ExtDeliveredAt = Base + "StructureDefinition/delivered-at"
	// ExtDeliveryAttempts (DiagnosticReport, valueUnsignedInt),
	// ExtDeliveryLastError (valueCode: the kind of the last failure, e.g.
	// transient, invalid, not-found) and ExtDeliveryNextAttempt
	// (valueInstant) say why a report pending or failed is not in QUBS yet.
	ExtDeliveryAttempts    = Base + "StructureDefinition/delivery-attempts"
	ExtDeliveryLastError   = Base + "StructureDefinition/delivery-last-error"
	ExtDeliveryNextAttempt = Base + "StructureDefinition/delivery-next-attempt"
	// ExtUser (on a Reference to a QUBS user: DocumentReference.author,
	// Communication.sender, Flag.author; complex) is the QUBS
	// UserSummaryResponse exactly: sub-extensions "username", "firstName",
	// "initials", "lastName", "role" (valueString), those present.
	// Reference.display and .identifier are conveniences derived from it.
	ExtUser = Base + "StructureDefinition/qubs-user"
	// ExtIsAlert (Communication, valueBoolean) is the comment's isAlert,
	// always present: the category code says the same for consistent QUBS
	// data, this keeps it when QUBS sends a type and a flag that disagree.
	ExtIsAlert = Base + "StructureDefinition/qubs-is-alert"
	// ExtPatientLevel (Communication, valueBoolean true) marks a comment
	// whose appointmentId was empty: a patient-level comment, listed
	// through the appointment in basedOn.
	ExtPatientLevel = Base + "StructureDefinition/patient-level-comment"
	// ExtCommentAppointmentID (Communication, valueString) keeps a
	// comment's appointmentId when it is neither empty nor the appointment
	// it was listed through.
	ExtCommentAppointmentID = Base + "StructureDefinition/qubs-appointment-id"
	// ExtFlagServiceRequest (Flag, valueReference to ServiceRequest) is the
	// appointment the alert was listed through. R4 Flag has no basedOn and
	// the bridge serves no Encounter.
	ExtFlagServiceRequest = Base + "StructureDefinition/flag-service-request"
)

// External systems of the report, document and comment mappings.
const (
	SystemLOINC = "http://loinc.org"
	// SystemMedicareProvider is the AU Base Medicare provider number
	// system, read from the interpreting clinician.
	SystemMedicareProvider = "http://ns.electronichealth.net.au/id/medicare-provider-number"
	// ExtFlagDetail is the core extension pointing from a Flag to the
	// record behind it: the Communication of the same comment.
	ExtFlagDetail = "http://hl7.org/fhir/StructureDefinition/flag-detail"
)
