package server

import (
	"net/http"
	"slices"
	"strings"

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

// Result parameters of the searches whose totals and orders the store can
// give (DiagnosticReport, AuditEvent): declared in their SearchSpecs, so
// that the other types report them ignored.
var (
	paramSort    = fhir.ParamSpec{Name: "_sort", Type: "special", Documentation: "One sort key, - for descending."}
	paramTotal   = fhir.ParamSpec{Name: "_total", Type: "special", Documentation: "accurate gives Bundle.total on every page; none and estimate give none."}
	paramSummary = fhir.ParamSpec{Name: "_summary", Type: "special", Documentation: "count answers the total alone; false is the default."}
)

// results is what a search's _sort, _total and _summary ask for.
type results struct {
	sort      string // one of the keys allowed, "" for the default order
	total     bool   // Bundle.total on the page
	countOnly bool   // the total alone (_summary=count)
}

// parseResults reads _sort (one of sorts, optionally prefixed with -),
// _total and _summary. What cannot be honoured is refused: a client that
// asked for an order or a count must not get a page that only looks like
// one.
func parseResults(q *fhir.Query, sorts ...string) (results, error) {
	var r results
	if v := first(q.Params["_sort"]); v != "" {
		if strings.Contains(v, ",") || !slices.Contains(sorts, strings.TrimPrefix(v, "-")) {
			return r, fhir.Errorf(http.StatusBadRequest, "not-supported", "_sort takes one of %s (- for descending)", strings.Join(sorts, ", "))
		}
		r.sort = v
	}
	switch v := first(q.Params["_total"]); v {
	case "", "none", "estimate":
	case "accurate":
		r.total = true
	default:
		return r, fhir.Errorf(http.StatusBadRequest, "value", "_total takes none, estimate or accurate")
	}
	switch v := first(q.Params["_summary"]); v {
	case "", "false":
	case "count":
		r.countOnly, r.total = true, true
	default:
		return r, fhir.Errorf(http.StatusBadRequest, "not-supported", "_summary takes count or false here")
	}
	return r, nil
}
