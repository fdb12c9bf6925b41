package server

import (
	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
)

// searchBundle starts the searchset of a search of typ: its self link names
// only the parameters the search used, and an outcome entry names those it
// ignored (R4 search.html#selflink and #errors), the same on every
// searchable type. It returns the FHIR base for the entries' fullUrls.
func (s *Server) searchBundle(c *gin.Context, typ string, q *fhir.Query) (*fhir.Bundle, string) {
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domainOf(c))
	b := fhir.NewSearchset(nil)
	self := base + "/" + typ
	if enc := q.Used().Encode(); enc != "" {
		self += "?" + enc
	}
	b.SetLink("self", self)
	if o := q.IgnoredOutcome(); o != nil {
		b.AddOutcome(o)
	}
	return b, base
}
