package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// keyAuditBody holds the answer body for the audit to read disclosures
// from, for handlers that do not report them yet.
const keyAuditBody = "qfb.auditBody"

// maxAuditParse bounds the response the audit reads for patient and
// resource references; larger answers are audited by route alone.
const maxAuditParse = 8 << 20

// audit records one AuditEvent per FHIR interaction, after the IHE Basic
// Audit Log Patterns: who (client, method, credential id, address), what
// (action, interaction, resources, patients, search parameter names),
// when, the outcome, and the correlation id. Patients and resources are
// read off the FHIR answer the client received, so the record says exactly
// what was disclosed or changed. It runs after the handler; a failure to
// record is logged, never turned into a failed request (the client's work
// is done by then).
func (s *Server) audit() gin.HandlerFunc {
	if s.cfg.Store == nil {
		return func(c *gin.Context) { c.Next() }
	}
	return func(c *gin.Context) {
		c.Next()
		route := c.FullPath()
		spec := s.routeOf(c)
		if spec == nil || spec.interaction.auditAction() == "" {
			return // no FHIR route (404), or one that discloses nothing
		}
		if c.Writer.Status() == http.StatusTooManyRequests {
			// Throttled before anything was touched; recording each one
			// would let a flood of refusals flood the audit trail.
			return
		}
		typ, interaction, action := spec.typ, string(spec.interaction), spec.interaction.auditAction()
		p := principalOf(c)
		rec := &store.AuditRecord{
			Domain:        domainOf(c),
			Action:        action,
			Interaction:   interaction,
			Outcome:       outcomeOf(c.Writer.Status()),
			AgentID:       clientOf(c),
			AgentMethod:   principalMethod(p),
			TokenID:       principalTokenID(p),
			NetworkAddr:   c.ClientIP(),
			CorrelationID: correlationIDOf(c),
			RequestPath:   route,
		}
		if rec.Outcome != store.AuditOutcomeSuccess {
			rec.OutcomeDesc = fmt.Sprintf("HTTP %d", c.Writer.Status())
		}
		if interaction == "search-type" {
			params := c.Request.URL.Query()
			for k, vs := range c.Request.PostForm { // POST _search
				params[k] = append(params[k], vs...)
			}
			rec.Query = store.AuditQuery(typ, params)
		}
		if id := c.Param("id"); id != "" && validFHIRID(id) {
			rec.EntityRefs = append(rec.EntityRefs, typ+"/"+id)
		}
		d := state(c).disclosed
		rec.EntityRefs = append(rec.EntityRefs, d.entities...)
		rec.PatientRefs = append(rec.PatientRefs, d.patients...)
		if b, ok := c.Get(keyAuditBody); ok {
			patients, entities := disclosed(b.([]byte))
			rec.PatientRefs = append(rec.PatientRefs, patients...)
			rec.EntityRefs = append(rec.EntityRefs, entities...)
		}
		rec.EntityRefs = dedupe(rec.EntityRefs)
		rec.PatientRefs = dedupe(rec.PatientRefs)
		// Recorded even when the request timed out or the client went
		// away: those are exactly the events an audit must not miss.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 5*time.Second)
		defer cancel()
		if err := s.cfg.Store.RecordAudit(ctx, rec); err != nil {
			s.log.Error("audit: recording failed", "correlation_id", rec.CorrelationID, "route", route, "error", err.Error())
		}
	}
}

func outcomeOf(status int) string {
	switch {
	case status < 400:
		return store.AuditOutcomeSuccess
	case status < 500:
		return store.AuditOutcomeMinorFailure
	}
	return store.AuditOutcomeSeriousFailure
}

// disclosed returns the patients and resources in a FHIR answer: the
// resource itself, or a Bundle's entries, and the patients they are about
// (a Patient, or a subject/patient reference to one).
func disclosed(body []byte) (patients, entities []string) {
	if len(body) > maxAuditParse {
		return nil, nil
	}
	type ref struct {
		Reference string `json:"reference"`
	}
	type res struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
		Subject      *ref   `json:"subject"`
		Patient      *ref   `json:"patient"`
		Entry        []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	add := func(r *res) {
		if r.ResourceType == "" || r.ResourceType == "OperationOutcome" || r.ResourceType == "Bundle" || r.ID == "" {
			return
		}
		entities = append(entities, r.ResourceType+"/"+r.ID)
		if r.ResourceType == "Patient" {
			patients = append(patients, "Patient/"+r.ID)
		}
		for _, p := range []*ref{r.Subject, r.Patient} {
			if p != nil && strings.HasPrefix(p.Reference, "Patient/") {
				patients = append(patients, p.Reference)
			}
		}
	}
	var top res
	if json.Unmarshal(body, &top) != nil {
		return nil, nil
	}
	add(&top)
	for _, e := range top.Entry {
		var r res
		if json.Unmarshal(e.Resource, &r) == nil {
			add(&r)
		}
	}
	return patients, entities
}

func dedupe(refs []string) []string {
	seen := make(map[string]bool, len(refs))
	out := refs[:0]
	for _, r := range refs {
		if !seen[r] && validRef(r) {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

func validRef(r string) bool {
	typ, id, ok := strings.Cut(r, "/")
	return ok && typ != "" && validFHIRID(id)
}

func validFHIRID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

var auditEventSearch = fhir.SearchSpec{
	Resource: "AuditEvent",
	Params: []fhir.ParamSpec{
		{Name: "date", Type: "date", Documentation: "When recorded; ge/gt and le/lt prefixes bound the range."},
		{Name: "patient", Type: "reference", Documentation: "Patient/{id}: events about the patient."},
		{Name: "agent", Type: "token", Documentation: "The client id."},
		{Name: "action", Type: "token", Documentation: "C, R, U, D or E."},
		{Name: cursorParam, Type: "special", Documentation: "Opaque paging position; use the next link."},
	},
}

func (s *Server) searchAuditEvents(c *gin.Context) error {
	domain := domainOf(c)
	values := c.Request.URL.Query()
	q, err := fhir.ParseSearch(values, c.GetHeader("Prefer"), auditEventSearch, defaultCount, maxCount)
	if err != nil {
		return err
	}
	f := store.AuditFilter{Limit: q.Count}
	for _, v := range q.Params["date"] {
		if err := dateBound(&f, v); err != nil {
			return err
		}
	}
	patients, err := referenceIDs(q, "Patient", "patient")
	if err != nil {
		return err
	}
	if len(patients) > 1 {
		return fhir.Errorf(http.StatusBadRequest, "not-supported", "patient takes one reference")
	}
	if len(patients) == 1 {
		f.PatientRef = "Patient/" + patients[0]
	}
	f.AgentID = fhir.ParseToken(first(q.Params["agent"])).Code
	f.Action = fhir.ParseToken(first(q.Params["action"])).Code
	binding := searchBinding(domain, "AuditEvent", q)
	if tok := first(q.Params[cursorParam]); tok != "" {
		raw, err := s.cursors.Open(binding, tok)
		if err != nil {
			return err
		}
		f.After = string(raw)
	}
	recs, next, err := s.cfg.Store.SearchAudit(c.Request.Context(), domain, f)
	if err != nil {
		return fmt.Errorf("searching audit events: %w", err)
	}
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domain)
	bundle := fhir.NewSearchset(nil)
	bundle.SetLink("self", base+"/AuditEvent?"+values.Encode())
	if next != "" {
		bundle.SetLink("next", pageURL(base+"/AuditEvent", values, s.cursors.Seal(binding, []byte(next))))
	}
	for _, r := range recs {
		ev, err := mapping.AuditEventFromRecord(r)
		if err != nil {
			return fmt.Errorf("mapping audit record: %w", err)
		}
		b, err := encode(ev)
		if err != nil {
			return err
		}
		bundle.AddMatch(base+"/AuditEvent/"+r.ID, b)
	}
	s.write(c, http.StatusOK, bundle)
	return nil
}

// dateBound applies one date parameter with a FHIR search prefix: ge or
// gt bound the start, le or lt the end. Equality and the other prefixes
// are not offered.
func dateBound(f *store.AuditFilter, v string) error {
	prefix, val := "eq", v
	if len(v) > 2 && v[0] >= 'a' && v[0] <= 'z' {
		prefix, val = v[:2], v[2:]
	}
	t, err := parseFHIRDate(val)
	if err != nil {
		return fhir.Errorf(http.StatusBadRequest, "value", "date must be a FHIR date or dateTime with a prefix ge, gt, le or lt")
	}
	switch prefix {
	case "ge", "gt":
		f.Since = t
	case "le", "lt":
		f.Until = t
	default:
		return fhir.Errorf(http.StatusBadRequest, "not-supported", "date takes a ge, gt, le or lt prefix")
	}
	return nil
}

func parseFHIRDate(v string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05Z07:00", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("not a date")
}

func (s *Server) readAuditEvent(c *gin.Context) error {
	r, err := s.cfg.Store.AuditEvent(c.Request.Context(), domainOf(c), c.Param("id"))
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
		return fhir.Errorf(http.StatusNotFound, "not-found", "AuditEvent/%s is not known", c.Param("id"))
	}
	if err != nil {
		return err
	}
	ev, err := mapping.AuditEventFromRecord(r)
	if err != nil {
		return fmt.Errorf("mapping audit record: %w", err)
	}
	s.write(c, http.StatusOK, ev)
	return nil
}

func principalMethod(p *auth.Principal) string {
	if p == nil {
		return ""
	}
	return p.Method
}

func principalTokenID(p *auth.Principal) string {
	if p == nil {
		return ""
	}
	return p.TokenID
}
