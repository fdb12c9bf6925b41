package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
)

// capabilities lists exactly what the routes implement; routes() and this
// list change together.
func (s *Server) capabilities(base string) fhir.CapabilityConfig {
	cfg := fhir.CapabilityConfig{
		Software:            "qubs-fhir-bridge",
		Version:             s.cfg.Version,
		BaseURL:             base,
		Date:                s.started,
		SecurityDescription: securityDescription(s.cfg.AuthMode),
		Resources: []fhir.ResourceCapability{
			{
				Type:          "ServiceRequest",
				Interactions:  []string{"read", "search-type"},
				Search:        serviceRequestSearch.Params,
				Includes:      serviceRequestSearch.Includes,
				Documentation: "Studies pending reporting in QUBS. Search by POST [base]/ServiceRequest/_search is also accepted.",
			},
			{Type: "Patient", Interactions: []string{"read"}, Documentation: "Patients of appointments pending reporting."},
			{
				Type: "DocumentReference", Interactions: []string{"read", "search-type", "create"},
				Search:        documentReferenceSearch.Params,
				Documentation: "QUBS appointment attachments (referrals, worksheets, report artifacts). Create uploads one PDF or DICOM SR report artifact to QUBS.",
			},
			{Type: "Binary", Interactions: s.binaryInteractions(), Documentation: "Attachment bytes, streamed from QUBS; files sent for use as report artifacts."},
			{
				Type: "Communication", Interactions: []string{"read", "search-type", "create"},
				Search:        communicationSearch.Params,
				Documentation: "QUBS appointment and patient comments and alerts. Create posts a comment to QUBS.",
			},
			{Type: "Flag", Interactions: []string{"read", "search-type"}, Search: flagSearch.Params, Documentation: "QUBS alerts (appointment and patient level)."},
			{Type: "Practitioner", Interactions: []string{"read"}, Documentation: "Referring doctors and assigned radiologists."},
			{Type: "Organization", Interactions: []string{"read"}, Documentation: "Referring clinics."},
		},
	}
	if s.cfg.SMART != nil {
		cfg.OAuth = &fhir.OAuthURIs{Token: s.cfg.SMARTTokenURL}
		cfg.SecurityServices = []string{"SMART-on-FHIR"}
	}
	if s.cfg.Store != nil {
		cfg.Resources = append(cfg.Resources, fhir.ResourceCapability{
			Type: "DiagnosticReport", Interactions: []string{"read", "vread", "update", "search-type", "create"},
			Search: diagnosticReportSearch.Params, Versioning: "versioned-update", ConditionalCreate: true,
			Documentation: "Reports for QUBS. Accepted reports are stored and delivered to QUBS exactly once, " +
				"with their PDF and DICOM SR presentedForms uploaded first; the delivery state is an extension of the resource.",
		}, fhir.ResourceCapability{
			Type: "AuditEvent", Interactions: []string{"read", "search-type"}, Search: auditEventSearch.Params,
			Documentation: "The audit trail (IHE BALP): every read of PHI and every change through this FHIR base.",
		})
	}
	return cfg
}

func (s *Server) binaryInteractions() []string {
	if s.cfg.Store != nil {
		return []string{"read", "create"}
	}
	return []string{"read"}
}

func (s *Server) metadata(c *gin.Context) error {
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domainOf(c))
	s.write(c, http.StatusOK, fhir.CapabilityStatement(s.capabilities(base)))
	return nil
}

func securityDescription(mode string) string {
	switch mode {
	case "static":
		return "Bearer tokens issued by the operator, each limited to QUBS domains and SMART v2 system scopes."
	case "jwt":
		return "Bearer JWTs from the operator's authorization server (JWKS-verified), limited to QUBS domains and SMART v2 system scopes."
	case "smart":
		return "SMART Backend Services: client_credentials with a private_key_jwt assertion (RS384/ES384) at the token endpoint; " +
			"tokens are limited to QUBS domains and SMART v2 system scopes. AuditEvent needs an AuditEvent scope."
	}
	return "No inbound authentication (BRIDGE_AUTH=none): the bridge listens on loopback only."
}
