package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// Paging of ServiceRequest searches.
const (
	defaultCount = 100 // QUBS's own default page size
	maxCount     = 500 // QUBS's largest page; larger _count is clamped
	// maxPagesPerSearch bounds the QUBS pages one filtered search request
	// reads before it answers with what it has and a next link: FHIR lets
	// a page hold fewer than _count entries, and a client must not wait for
	// a walk of the whole worklist.
	maxPagesPerSearch = 10
	// cursorParam carries the sealed position in next links.
	cursorParam = "_cursor"
)

// serviceRequestSearch is what ServiceRequest search understands; the
// CapabilityStatement is built from the same value.
var serviceRequestSearch = fhir.SearchSpec{
	Resource: "ServiceRequest",
	Params: []fhir.ParamSpec{
		{Name: "_id", Type: "token", Documentation: "Logical id (the encoded QUBS appointmentId)."},
		{Name: "identifier", Type: "token", Documentation: "QUBS appointment id, or Study Instance UID (urn:dicom:uid|urn:oid:...)."},
		{Name: "patient", Type: "reference", Documentation: "Patient/{id}."},
		{Name: "subject", Type: "reference", Documentation: "Patient/{id}."},
		{Name: "status", Type: "token", Documentation: "Request status; pending reporting appointments are active."},
		{Name: cursorParam, Type: "special", Documentation: "Opaque paging position; use the next link."},
	},
	Includes: []string{"ServiceRequest:subject", "ServiceRequest:requester", "ServiceRequest:performer"},
}

// srCursor is the position of the next bridge page: the QUBS token of the
// page to fetch ("" for the first) and how many of its items were already
// served. Re-reading a QUBS page with the same token is safe: QUBS tokens
// are opaque cursors, not one-shot.
type srCursor struct {
	Token string `json:"t,omitempty"`
	Skip  int    `json:"s,omitempty"`
}

// srFilter holds the parsed search criteria; a nil field matches anything.
type srFilter struct {
	id         string // decoded appointment id from _id
	identifier []fhir.Token
	patient    []string // Patient ids
	status     []string
}

func (f *srFilter) filtered() bool {
	return f.id != "" || len(f.identifier) > 0 || len(f.patient) > 0 || len(f.status) > 0
}

func (s *Server) searchServiceRequests(c *gin.Context) error {
	values := c.Request.URL.Query()
	if c.Request.Method == http.MethodPost {
		// POST [base]/ServiceRequest/_search carries the parameters in a
		// form body (FHIR R4 3.1.1.4.1); both sets count.
		if err := c.Request.ParseForm(); err != nil {
			return fhir.Errorf(http.StatusBadRequest, "invalid", "cannot parse the form body of _search")
		}
		for k, vs := range c.Request.PostForm {
			values[k] = append(values[k], vs...)
		}
	}
	q, err := fhir.ParseSearch(values, c.GetHeader("Prefer"), serviceRequestSearch, defaultCount, maxCount)
	if err != nil {
		return err
	}
	domain := domainOf(c)
	filter, err := parseSRFilter(q)
	if err != nil {
		return err
	}
	binding := searchBinding(domain, "ServiceRequest", q)
	var cur srCursor
	if tok := first(q.Params[cursorParam]); tok != "" {
		raw, err := s.cursors.Open(binding, tok)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &cur); err != nil || cur.Skip < 0 {
			return fhir.Errorf(http.StatusBadRequest, "invalid", "the paging cursor is not valid for this search")
		}
	}

	ctx := c.Request.Context()
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domain)
	var matches []*mappedAppointment
	var next *srCursor
	var skipped int

	if filter.id != "" || directIdentifier(filter) != "" {
		// One appointment by id: QUBS answers it directly.
		id := filter.id
		if id == "" {
			id = directIdentifier(filter)
		}
		if cur.Token == "" && cur.Skip == 0 {
			a, err := s.cfg.QUBS.GetPending(ctx, domain, id)
			switch {
			case qubs.KindOf(err) == qubs.KindNotFound:
			case err != nil:
				return err
			default:
				m, err := s.mapAppointment(domain, a)
				switch {
				case unrepresentable(err):
					skipped++
				case err != nil:
					return err
				case filter.match(m):
					matches = append(matches, m)
				}
			}
		}
	} else {
		pageSize := q.Count
		if filter.filtered() {
			pageSize = maxQUBSPageSize
		}
		matches, next, skipped, err = s.collect(c, domain, pageSize, q.Count, cur, filter)
		if err != nil {
			return err
		}
	}

	bundle := fhir.NewSearchset(nil)
	bundle.SetLink("self", selfURL(base, values))
	if next != nil {
		raw, _ := json.Marshal(next)
		bundle.SetLink("next", pageURL(base+"/ServiceRequest", values, s.cursors.Seal(binding, raw)))
	}
	if len(q.Ignored) > 0 {
		bundle.AddOutcome(fhir.OutcomeJSON(fhir.Issue{Severity: "warning", Code: "not-supported",
			Diagnostics: "ignored search parameters: " + strings.Join(q.Ignored, ", ")}))
	}
	s.noteSkipped(c, bundle, skipped, "appointments")
	included := map[string]bool{}
	withheld := map[string]bool{}
	for _, m := range matches {
		bundle.AddMatch(base+"/ServiceRequest/"+m.id, m.body)
		for _, inc := range q.Includes {
			for _, ref := range m.includes[inc] {
				if included[ref] {
					continue
				}
				// An include is a read of the included resource: the
				// caller needs the scope to read it directly.
				if typ, _, _ := strings.Cut(ref, "/"); !canRead(c, typ) {
					withheld[typ] = true
					continue
				}
				body, ok, err := m.encodeRelated(ref)
				if err != nil {
					return err
				}
				if ok {
					included[ref] = true
					bundle.AddInclude(base+"/"+ref, body)
				}
			}
		}
	}
	if len(withheld) > 0 {
		types := slices.Sorted(maps.Keys(withheld))
		bundle.AddOutcome(fhir.OutcomeJSON(fhir.Issue{Severity: "warning", Code: "suppressed",
			Diagnostics: "included resources left out, the token grants no read of: " + strings.Join(types, ", ")}))
	}
	s.write(c, http.StatusOK, bundle)
	return nil
}

// canRead reports whether the caller's scopes grant reading typ.
func canRead(c *gin.Context, typ string) bool {
	p := principalOf(c)
	if p == nil {
		return false
	}
	return p.Check(typ, interactionRead.perm()) == nil
}

// collect reads QUBS pages from cur until it has count matches, QUBS runs
// out, or the per-request page budget is spent, and returns where the next
// bridge page starts (nil at the end).
func (s *Server) collect(c *gin.Context, domain string, pageSize, count int, cur srCursor, f *srFilter) (out []*mappedAppointment, next *srCursor, skipped int, err error) {
	ctx := c.Request.Context()
	token, skip := cur.Token, cur.Skip
	for pages := 0; ; pages++ {
		page, err := s.cfg.QUBS.ListPending(ctx, domain, pageSize, token)
		if err != nil {
			return nil, nil, 0, err
		}
		if skip > len(page.Items) {
			return nil, nil, 0, fhir.Errorf(http.StatusBadRequest, "invalid", "the paging cursor no longer fits the worklist; start the search again")
		}
		for i := skip; i < len(page.Items); i++ {
			m, err := s.mapAppointment(domain, &page.Items[i])
			if unrepresentable(err) {
				skipped++
				continue
			}
			if err != nil {
				return nil, nil, 0, err
			}
			if !f.match(m) {
				continue
			}
			out = append(out, m)
			if len(out) == count {
				switch {
				case i+1 < len(page.Items):
					return out, &srCursor{Token: token, Skip: i + 1}, skipped, nil
				case page.More():
					return out, &srCursor{Token: *page.NextToken}, skipped, nil
				default:
					return out, nil, skipped, nil
				}
			}
		}
		skip = 0
		if !page.More() {
			return out, nil, skipped, nil
		}
		token = *page.NextToken
		if pages+1 >= maxPagesPerSearch {
			return out, &srCursor{Token: token}, skipped, nil
		}
	}
}

// unrepresentable reports whether mapping failed because a QUBS record
// cannot be given a FHIR id (an id too long to encode): such records are
// left out of answers, with a warning, rather than failing them whole.
func unrepresentable(err error) bool {
	return err != nil && errors.Is(err, mapping.ErrUnrepresentable)
}

// noteSkipped tells the client, in the Bundle, that records were left
// out, and the operator, in the log; neither names the records.
func (s *Server) noteSkipped(c *gin.Context, b *fhir.Bundle, n int, what string) {
	if n == 0 {
		return
	}
	s.log.Warn("search: records left out, their QUBS ids cannot be FHIR ids", "correlation_id", correlationIDOf(c), "count", n, "kind", what)
	b.AddOutcome(fhir.OutcomeJSON(fhir.Issue{Severity: "warning", Code: "too-long",
		Diagnostics: fmt.Sprintf("%d %s left out: their QUBS ids do not fit in a FHIR id", n, what)}))
}

func (s *Server) readServiceRequest(c *gin.Context) error {
	domain := domainOf(c)
	apptID, ok := appointmentID(c.Param("id"))
	if !ok {
		return fhir.Errorf(http.StatusNotFound, "not-found", "ServiceRequest/%s is not known", c.Param("id"))
	}
	a, err := s.cfg.QUBS.GetPending(c.Request.Context(), domain, apptID)
	if err != nil {
		if qubs.KindOf(err) == qubs.KindNotFound {
			return fhir.Errorf(http.StatusNotFound, "not-found", "ServiceRequest/%s is not known or no longer pending reporting", c.Param("id"))
		}
		return err
	}
	m, err := s.mapAppointment(domain, a)
	if unrepresentable(err) {
		return fhir.Errorf(http.StatusNotFound, "not-found", "ServiceRequest/%s is not known", c.Param("id"))
	}
	if err != nil {
		return err
	}
	s.writeRaw(c, http.StatusOK, m.body)
	return nil
}

// mappedAppointment is one appointment as the bridge emits it: the
// ServiceRequest, the resources it references (encoded only when a search
// includes them or a read asks for them), and which references each
// _include follows.
type mappedAppointment struct {
	id       string
	sr       *models.ServiceRequest
	body     json.RawMessage
	related  map[string]any      // "Patient/123" -> *models.Patient
	includes map[string][]string // "ServiceRequest:subject" -> ["Patient/123"]
}

// mapAppointment maps an appointment and remembers where its derived
// resources came from, for later reads.
func (s *Server) mapAppointment(domain string, a *qubs.Appointment) (*mappedAppointment, error) {
	w, err := mapping.FromAppointment(a, s.cfg.Zones)
	if err != nil {
		return nil, fmt.Errorf("mapping appointment: %w", err)
	}
	body, err := encode(w.ServiceRequest)
	if err != nil {
		return nil, fmt.Errorf("encoding ServiceRequest: %w", err)
	}
	m := &mappedAppointment{
		sr:       &w.ServiceRequest,
		body:     body,
		related:  make(map[string]any, 4),
		includes: make(map[string][]string, 3),
	}
	if w.ServiceRequest.Id != nil {
		m.id = *w.ServiceRequest.Id
	}
	add := func(typ string, id *string, v any) {
		if id != nil && *id != "" {
			m.related[typ+"/"+*id] = v
			s.cache.put(domain, typ, *id, a)
		}
	}
	if w.Patient != nil {
		add("Patient", w.Patient.Id, w.Patient)
	}
	if w.Referrer != nil {
		add("Practitioner", w.Referrer.Id, w.Referrer)
	}
	if w.Radiologist != nil {
		add("Practitioner", w.Radiologist.Id, w.Radiologist)
	}
	if w.Clinic != nil {
		add("Organization", w.Clinic.Id, w.Clinic)
	}
	sr := &w.ServiceRequest
	m.includes["ServiceRequest:subject"] = refs(sr.Subject)
	if sr.Requester != nil {
		m.includes["ServiceRequest:requester"] = refs(*sr.Requester)
	}
	m.includes["ServiceRequest:performer"] = refs(sr.Performer...)
	return m, nil
}

// encodeRelated encodes one referenced resource; ok is false when the
// appointment does not reference it.
func (m *mappedAppointment) encodeRelated(ref string) (body json.RawMessage, ok bool, err error) {
	v, ok := m.related[ref]
	if !ok {
		return nil, false, nil
	}
	body, err = encode(v)
	if err != nil {
		return nil, true, fmt.Errorf("encoding %s: %w", ref, err)
	}
	return body, true, nil
}

func refs(rs ...models.Reference) []string {
	var out []string
	for _, r := range rs {
		if r.Reference != nil && *r.Reference != "" {
			out = append(out, *r.Reference)
		}
	}
	return out
}

func parseSRFilter(q *fhir.Query) (*srFilter, error) {
	f := &srFilter{}
	for _, v := range q.Params["_id"] {
		for _, id := range fhir.SplitValues(v) {
			appt, ok := appointmentID(id)
			if !ok {
				return nil, fhir.Errorf(http.StatusBadRequest, "value", "_id %q is not a valid FHIR id", id)
			}
			if f.id != "" && f.id != appt {
				// Two different ids ANDed together match nothing; one id
				// ORed with another is a walk we do not offer.
				return nil, fhir.Errorf(http.StatusBadRequest, "not-supported", "_id takes a single id")
			}
			f.id = appt
		}
	}
	for _, v := range q.Params["identifier"] {
		for _, t := range fhir.SplitValues(v) {
			f.identifier = append(f.identifier, fhir.ParseToken(t))
		}
	}
	patients, err := referenceIDs(q, "Patient", "patient", "subject")
	if err != nil {
		return nil, err
	}
	f.patient = patients
	for _, v := range q.Params["status"] {
		for _, st := range fhir.SplitValues(v) {
			t := fhir.ParseToken(st)
			f.status = append(f.status, t.Code)
		}
	}
	return f, nil
}

// appointmentID returns the QUBS appointment id of a ServiceRequest id. Only
// the canonical encoding counts, so that one appointment is never served
// under two ids (a derived-looking "h-x" is not the appointment "h-x",
// whose id is encoded).
func appointmentID(srID string) (string, bool) {
	appt, err := mapping.DecodeID(srID)
	if err != nil {
		return "", false
	}
	if enc, err := mapping.ServiceRequestID(appt); err != nil || enc != srID {
		return "", false
	}
	return appt, true
}

// directIdentifier returns the appointment id an identifier search names
// when it can be answered by one QUBS get: a single token with the
// appointment-id system, or with no system and a value that is not a URN
// (Study Instance UIDs are urn:oid: values).
func directIdentifier(f *srFilter) string {
	if len(f.identifier) != 1 {
		return ""
	}
	t := f.identifier[0]
	if t.HasSystem && t.System == mapping.SystemAppointmentID {
		return t.Code
	}
	if !t.HasSystem && t.Code != "" && !strings.HasPrefix(t.Code, "urn:") {
		return t.Code
	}
	return ""
}

func (f *srFilter) match(m *mappedAppointment) bool {
	sr := m.sr
	if len(f.identifier) > 0 && !slices.ContainsFunc(f.identifier, func(t fhir.Token) bool { return identifierMatches(sr.Identifier, t) }) {
		return false
	}
	if len(f.patient) > 0 && !slices.ContainsFunc(f.patient, func(id string) bool {
		return sr.Subject.Reference != nil && *sr.Subject.Reference == "Patient/"+id
	}) {
		return false
	}
	if len(f.status) > 0 && !slices.Contains(f.status, sr.Status.Code()) {
		return false
	}
	return true
}

func identifierMatches(ids []models.Identifier, t fhir.Token) bool {
	for _, id := range ids {
		sys, val := deref(id.System), deref(id.Value)
		if t.HasSystem && sys != t.System {
			continue
		}
		if t.Code == "" || val == t.Code {
			return true
		}
	}
	return false
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// searchBinding ties a cursor to the search that minted it: the domain and
// every criterion except the cursor itself, so a cursor pasted into another
// search (or another domain) is refused rather than misread.
func searchBinding(domain, resource string, q *fhir.Query) string {
	var b strings.Builder
	b.WriteString(domain + "|" + resource + "|" + fmt.Sprint(q.Count))
	keys := make([]string, 0, len(q.Params))
	for k := range q.Params {
		if k != cursorParam {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		vs := slices.Clone(q.Params[k])
		slices.Sort(vs)
		b.WriteString("|" + k + "=" + strings.Join(vs, ","))
	}
	return b.String()
}

func selfURL(base string, values url.Values) string {
	u := base + "/ServiceRequest"
	if enc := values.Encode(); enc != "" {
		u += "?" + enc
	}
	return u
}
