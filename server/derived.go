package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// derivedTypes are the resources the bridge makes out of fields of the
// appointment view; QUBS has no endpoint for any of them.
var derivedTypes = []string{"Patient", "Practitioner", "Organization"}

// readDerived serves a Patient, Practitioner or Organization the bridge has
// emitted: from the short-lived cache when it was seen recently, else by
// walking the pending worklist (each appointment mapped and cached on the
// way) until the id turns up.
func (s *Server) readDerived(typ string) func(*gin.Context) error {
	return func(c *gin.Context) error {
		domain, id := domainOf(c), c.Param("id")
		if _, err := mapping.DecodeID(id); err != nil {
			return fhir.Errorf(http.StatusNotFound, "not-found", "%s/%s is not known", typ, id)
		}
		ref := typ + "/" + id
		serve := func(a *qubs.Appointment) (bool, error) {
			m, err := s.mapAppointment(domain, a)
			if unrepresentable(err) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			body, ok := m.AppendRelated(nil, ref)
			if ok {
				discloseResource(c, ref)
				s.writeRaw(c, http.StatusOK, body)
			}
			return ok, nil
		}
		if a, ok := s.cache.get(domain, typ, id); ok {
			if found, err := serve(a); found || err != nil {
				return err
			}
		}
		for a, err := range s.cfg.QUBS.Pending(c.Request.Context(), domain, maxQUBSPageSize) {
			if err != nil {
				return err
			}
			if found, err := serve(&a); found || err != nil {
				return err
			}
		}
		return fhir.Errorf(http.StatusNotFound, "not-found", "%s/%s is not referenced by any appointment pending reporting", typ, id)
	}
}
