package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
)

// capabilities lists exactly what the routes implement; routes() and this
// list change together.
func (s *Server) capabilities(base string) fhir.CapabilityConfig {
	return fhir.CapabilityConfig{
		Software: "qubs-fhir-bridge",
		Version:  s.cfg.Version,
		BaseURL:  base,
		Date:     s.started,
		SecurityDescription: "Tele-reporting bridge to the QUBS Integrations API. " +
			"Inbound authentication is not enforced in this release: run on loopback or behind an authenticating proxy.",
		Resources: []fhir.ResourceCapability{
			{
				Type:          "ServiceRequest",
				Interactions:  []string{"read", "search-type"},
				Search:        serviceRequestSearch.Params,
				Includes:      serviceRequestSearch.Includes,
				Documentation: "Studies pending reporting in QUBS. Search by POST [base]/ServiceRequest/_search is also accepted.",
			},
			{Type: "Patient", Interactions: []string{"read"}, Documentation: "Patients of appointments pending reporting."},
			{Type: "Practitioner", Interactions: []string{"read"}, Documentation: "Referring doctors and assigned radiologists."},
			{Type: "Organization", Interactions: []string{"read"}, Documentation: "Referring clinics."},
		},
	}
}

func (s *Server) metadata(c *gin.Context) error {
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, c.GetString(keyDomain))
	s.write(c, http.StatusOK, fhir.CapabilityStatement(s.capabilities(base)))
	return nil
}
