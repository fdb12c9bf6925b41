package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

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
		{Name: "occurrence", Type: "date", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ServiceRequest-occurrence", Documentation: occurrenceDoc},
		{Name: cursorParam, Type: "special", Documentation: "Opaque paging position; use the next link."},
	},
	Includes:    []string{"ServiceRequest:subject", "ServiceRequest:requester", "ServiceRequest:performer"},
	RevIncludes: []string{"Task:focus"},
}

// srCursor is the position of the next bridge page: the QUBS token of the
// page to fetch ("" for the first) and how many of its items were already
// served (only a filtered search stops inside a QUBS page). Re-reading a
// QUBS page with the same token is safe: QUBS tokens are opaque cursors,
// not one-shot.
type srCursor struct {
	Token string `json:"t,omitempty"`
	Skip  int    `json:"s,omitempty"`
	// Rest is the ticket of the remainder of the QUBS page this replica
	// kept for the next bridge page (0: none kept); see pageRests.
	Rest uint64 `json:"r,omitempty"`
}

// openCursor opens the search's paging cursor, sealed for binding; nil
// when the request has none (the first page).
func (s *Server) openCursor(q *fhir.Query, binding string) ([]byte, error) {
	tok := first(q.Params[cursorParam])
	if tok == "" {
		return nil, nil
	}
	return s.cursors.Open(binding, tok)
}

// worklistCursor is openCursor for the searches that walk the QUBS
// worklist: the zero srCursor on the first page.
func (s *Server) worklistCursor(q *fhir.Query, binding string) (srCursor, error) {
	var cur srCursor
	raw, err := s.openCursor(q, binding)
	if err != nil || raw == nil {
		return cur, err
	}
	if err := json.Unmarshal(raw, &cur); err != nil || cur.Skip < 0 {
		return cur, fhir.Errorf(http.StatusBadRequest, "invalid", "the paging cursor is not valid for this search")
	}
	return cur, nil
}

// srFilter holds the parsed search criteria; a nil field matches anything.
type srFilter struct {
	id         string // decoded appointment id from _id
	identifier []fhir.Token
	// patients holds the Patient ids of each patient or subject
	// parameter: one of each must match (R4 search.html#combining:
	// different parameters are ANDed, a comma is OR).
	patients [][]string
	status   []string
	dates    *walkDates
}

// worklistFilter is what collect asks of a search's criteria.
type worklistFilter interface {
	// filtered reports whether anything can fail to match (QUBS pages
	// are then read at their largest).
	filtered() bool
	match(m *mapping.Mapped) bool
}

// pageLoader is a worklistFilter that needs more than the appointment to
// match it (a Task's status, from the store): collect hands it each run
// of appointments before matching them, so it loads what it needs once
// per QUBS page rather than once per appointment.
type pageLoader interface {
	load(ctx context.Context, domain string, items []qubs.Appointment) error
}

func (f *srFilter) filtered() bool {
	return f.id != "" || len(f.identifier) > 0 || len(f.patients) > 0 || len(f.status) > 0 || f.dates.filtered()
}

func (s *Server) searchServiceRequests(c *gin.Context) error {
	values := c.Request.URL.Query()
	if c.Request.Method == http.MethodPost {
		// POST [base]/ServiceRequest/_search carries the parameters in a
		// form body (FHIR R4 3.1.1.4.1); both sets count.
		if err := c.Request.ParseForm(); err != nil {
			return fhir.Errorf(http.StatusBadRequest, "invalid", "cannot parse the form body of _search")
		}
		if !readableValues(c.Request.PostForm) {
			// What readableURL refuses in a query, refused in the body.
			return fhir.Errorf(http.StatusBadRequest, "value", "the request's form body holds a NUL or bytes that are not UTF-8")
		}
		for k, vs := range c.Request.PostForm {
			values[k] = append(values[k], vs...)
		}
	}
	q, err := fhir.ParseSearch(values, c.GetHeader("Prefer"), *s.srSearch(), defaultCount, maxCount)
	if err != nil {
		return err
	}
	if s.indexed() {
		return s.searchIndexedServiceRequests(c, q)
	}
	domain := domainOf(c)
	filter, err := parseSRFilter(q, s.cfg.Zones)
	if err != nil {
		return err
	}
	binding := searchBinding(domain, "ServiceRequest", q)
	cur, err := s.worklistCursor(q, binding)
	if err != nil {
		return err
	}

	ctx := c.Request.Context()
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domain)
	var matches []mapping.Mapped
	var next *srCursor
	var skipped int

	if filter.id != "" || directIdentifier(filter) != "" {
		// One appointment by id: QUBS answers it directly.
		id := filter.id
		if id == "" {
			id = directIdentifier(filter)
		}
		if cur.Token == "" && cur.Skip == 0 {
			if matches, skipped, err = s.directMatch(ctx, domain, id, filter); err != nil {
				return err
			}
		}
	} else {
		var rest *pageRest
		matches, next, rest, skipped, err = s.collect(c, domain, q.Count, cur, filter)
		if err != nil {
			return err
		}
		if rest != nil {
			next.Rest = s.rests.put(rest)
		}
	}

	bundle, _ := s.searchBundle(c, "ServiceRequest", q)
	if next != nil {
		raw, _ := json.Marshal(next)
		bundle.SetLink("next", pageURL(base+"/ServiceRequest", q.Used(), s.cursors.Seal(binding, raw)))
	}
	s.noteSkipped(c, bundle, skipped, "appointments")
	// Every resource is written once, straight into one arena the Bundle
	// copies from; slices of it stay valid when it grows. The arena is
	// reused once the answer is written: the Bundle copied what it needed.
	arena := getArena(len(matches) * (srSizeHint + includeSizeHint*len(q.Includes)))
	defer putArena(&arena)
	inc := newIncluder(c, bundle, base)
	var tasks *taskStates
	if slices.Contains(q.RevIncludes, "Task:focus") {
		// Each study's Task focuses on its ServiceRequest and shares its
		// id; their statuses come from the store in one search.
		tasks = s.newTaskStates()
		ids := make([]string, len(matches))
		for i := range matches {
			ids[i] = matches[i].AppointmentID()
		}
		if err := tasks.load(ctx, domain, ids); err != nil {
			return err
		}
	}
	for i := range matches {
		m := &matches[i]
		start := len(arena)
		arena = m.AppendServiceRequest(arena)
		// The reference is the fullUrl's tail: one string for both.
		fullURL := base + "/ServiceRequest/" + m.ID
		bundle.AddMatchCompact(fullURL, arena[start:])
		disclose(c, fullURL[len(base)+1:], patientRef(m))
		for _, name := range q.Includes {
			arena = inc.add(arena, m, includeRef(m, name))
		}
		if tasks != nil {
			start := len(arena)
			arena = m.AppendTask(arena, tasks.of(m))
			inc.addRaw("Task/"+m.ID, patientRef(m), arena[start:])
		}
	}
	inc.finish()
	s.write(c, http.StatusOK, bundle)
	return nil
}

// srSizeHint and includeSizeHint are about the sizes of one encoded
// ServiceRequest (2.1 kB on average over the simulator's seed, 2.7 kB at
// most) and one included resource, to size the arena a page is written
// into.
const (
	srSizeHint      = 2560
	includeSizeHint = 512
)

// arenas recycles the buffers search pages are written into: a page of
// 500 is over a megabyte, and allocating it afresh for every page is
// most of what a worklist walk gives the garbage collector.
var arenas sync.Pool

// maxPooledArena keeps an unusually large page's arena from being held.
const maxPooledArena = 4 << 20

func getArena(size int) []byte {
	if p, ok := arenas.Get().(*[]byte); ok && cap(*p) >= size {
		return (*p)[:0]
	}
	return make([]byte, 0, size)
}

func putArena(b *[]byte) {
	if cap(*b) <= maxPooledArena {
		arenas.Put(b)
	}
}

// includeRef is the reference an _include follows from m, "" when m has
// none.
func includeRef(m *mapping.Mapped, include string) string {
	switch include {
	case "ServiceRequest:subject":
		if m.PatientID != "" {
			return "Patient/" + m.PatientID
		}
	case "ServiceRequest:requester":
		if typ, id := m.Requester(); id != "" {
			return typ + "/" + id
		}
	case "ServiceRequest:performer":
		if m.RadiologistID != "" {
			return "Practitioner/" + m.RadiologistID
		}
	}
	return ""
}

// discloseResource reports a derived resource for the audit: a Patient is
// about itself, a Practitioner or Organization about no patient.
func discloseResource(c *gin.Context, ref string) {
	patient := ""
	if strings.HasPrefix(ref, "Patient/") {
		patient = ref
	}
	disclose(c, ref, patient)
}

// canRead reports whether the caller's scopes grant reading typ.
func canRead(c *gin.Context, typ string) bool {
	p := principalOf(c)
	if p == nil {
		return false
	}
	return p.Check(typ, interactionRead.perm()) == nil
}

// collect reads the QUBS pages of one bridge page, from cur, and returns
// the matches, where the next bridge page starts (nil at the end) and,
// when that is inside the last QUBS page read, the rest of that page for
// the next bridge page (see pageRests).
//
// A page holds exactly _count matches unless it is the last one: QUBS pages
// may be short, even empty, while more follow (a page examines pageSize
// appointments of any status and returns the pending ones), so the bridge
// reads as many as it takes to fill the page and keeps what is left of the
// last one. To make a walk cost at most one QUBS call per bridge page on
// average, an unfiltered search asks QUBS for pages of twice _count (up to
// QUBS's 500): one QUBS page then fills a bridge page as long as at least
// half of what QUBS examines is pending. Each QUBS page of a walk is read
// once, unless the next link reaches a replica that does not hold the rest
// (or holds it no longer), which re-reads that page and skips what was
// served.
//
// A filtered search reads QUBS pages of the largest size. Both stop after
// maxPagesPerSearch QUBS calls with what they have and a next link, so
// that a client never waits for a walk of the whole worklist.
func (s *Server) collect(c *gin.Context, domain string, count int, cur srCursor, f worklistFilter) (out []mapping.Mapped, next *srCursor, rest *pageRest, skipped int, err error) {
	ctx := c.Request.Context()
	pageSize := min(2*count, maxQUBSPageSize)
	if f.filtered() {
		pageSize = maxQUBSPageSize
	}
	calls := 0
	read := func(token string) (*qubs.AppointmentPage, error) {
		calls++
		return s.cfg.QUBS.ListPending(ctx, domain, pageSize, token)
	}
	// items are the unread appointments of the QUBS page read with token,
	// of which skip were read before; more is that page's next token.
	token, skip := cur.Token, cur.Skip
	var items []qubs.Appointment
	var more *string
	if r := s.rests.take(cur.Rest); r != nil && r.token == token && r.skip == skip {
		items, more = r.items, r.more
	} else {
		page, err := read(token)
		if err != nil {
			return nil, nil, nil, 0, err
		}
		if skip > len(page.Items) {
			return nil, nil, nil, 0, fhir.Errorf(http.StatusBadRequest, "invalid", "the paging cursor no longer fits the worklist; start the search again")
		}
		items, more = page.Items[skip:], page.NextToken
	}
	out = make([]mapping.Mapped, 0, count)
	loader, _ := f.(pageLoader)
	for {
		if loader != nil {
			if err := loader.load(ctx, domain, items); err != nil {
				return nil, nil, nil, 0, err
			}
		}
		for i := range items {
			m, err := s.mapAppointment(domain, &items[i])
			if unrepresentable(err) {
				skipped++
				continue
			}
			if err != nil {
				return nil, nil, nil, 0, err
			}
			if !f.match(&m) {
				continue
			}
			out = append(out, m)
			if len(out) < count {
				continue
			}
			switch {
			case i+1 < len(items):
				next = &srCursor{Token: token, Skip: skip + i + 1}
				return out, next, &pageRest{token: token, skip: next.Skip, items: items[i+1:], more: more}, skipped, nil
			case more != nil && *more != "":
				return out, &srCursor{Token: *more}, nil, skipped, nil
			default:
				return out, nil, nil, skipped, nil
			}
		}
		if more == nil || *more == "" {
			return out, nil, nil, skipped, nil
		}
		token, skip = *more, 0
		if calls >= maxPagesPerSearch {
			return out, &srCursor{Token: token}, nil, skipped, nil
		}
		page, err := read(token)
		if err != nil {
			return nil, nil, nil, 0, err
		}
		items, more = page.Items, page.NextToken
	}
}

// pageRest is what a bridge page left unread of the last QUBS page it
// read: the appointments after the first skip of the page read with
// token, and that page's next token.
type pageRest struct {
	token string
	skip  int
	items []qubs.Appointment
	more  *string
	at    time.Time
}

// Bounds of pageRests: a rest holds at most one QUBS page (500
// appointments, a few hundred kB of decoded body), so at most
// maxPageRests pages are held, and none for longer than pageRestTTL.
const (
	maxPageRests = 128
	pageRestTTL  = time.Minute
)

// pageRests keeps the rests of QUBS pages for the bridge page that follows,
// under a random ticket carried in the (sealed) next link. A ticket is
// taken once; a rest that is missing, taken, expired or evicted (the
// oldest goes when full) costs the next page a re-read of its QUBS page,
// never a wrong answer: the cursor itself says which page and where in it.
type pageRests struct {
	mu    sync.Mutex
	m     map[uint64]*pageRest
	order []uint64 // tickets, oldest first; may name taken ones
}

func newPageRests() *pageRests { return &pageRests{m: map[uint64]*pageRest{}} }

// put keeps r and returns its ticket.
func (p *pageRests) put(r *pageRest) uint64 {
	r.at = time.Now()
	ticket := rand.Uint64() | 1 // never 0, which means none
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.order) > 0 {
		oldest, ok := p.m[p.order[0]]
		if ok && len(p.m) < maxPageRests && r.at.Sub(oldest.at) < pageRestTTL {
			break
		}
		delete(p.m, p.order[0])
		p.order = p.order[1:]
	}
	if len(p.order) > 4*maxPageRests {
		// Taken tickets behind a live oldest one: keep the live ones.
		p.order = slices.DeleteFunc(p.order, func(t uint64) bool { _, ok := p.m[t]; return !ok })
	}
	p.m[ticket] = r
	p.order = append(p.order, ticket)
	return ticket
}

// take returns the rest of ticket and forgets it; nil when there is none
// or it has expired.
func (p *pageRests) take(ticket uint64) *pageRest {
	if ticket == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.m[ticket]
	if !ok {
		return nil
	}
	delete(p.m, ticket)
	if time.Since(r.at) >= pageRestTTL {
		return nil
	}
	return r
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
			s.indexGone(c, domain, apptID)
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
	s.indexSaw(c, domain, a)
	patient := ""
	if m.PatientID != "" {
		patient = "Patient/" + m.PatientID
	}
	disclose(c, "ServiceRequest/"+m.ID, patient)
	// From the search's pool of arenas: the answer is written before
	// writeRaw returns, and nothing keeps the bytes.
	body := getArena(srSizeHint)
	defer putArena(&body)
	body = m.AppendServiceRequest(body)
	s.writeRaw(c, http.StatusOK, body)
	return nil
}

// mapAppointment maps an appointment for emission and remembers where its
// derived resources came from, for later reads. a must not change while
// the result is in use.
func (s *Server) mapAppointment(domain string, a *qubs.Appointment) (mapping.Mapped, error) {
	m, err := mapping.Map(a, s.cfg.Zones)
	if err != nil {
		return mapping.Mapped{}, fmt.Errorf("mapping appointment: %w", err)
	}
	s.cache.putDerived(domain, &m, a)
	return m, nil
}

func parseSRFilter(q *fhir.Query, z *mapping.Zones) (*srFilter, error) {
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
	var err error
	if f.patients, err = referenceGroups(q, "Patient", "patient", "subject"); err != nil {
		return nil, err
	}
	for _, v := range q.Params["status"] {
		for _, st := range fhir.SplitValues(v) {
			t := fhir.ParseToken(st)
			f.status = append(f.status, t.Code)
		}
	}
	if f.dates, err = parseWalkDates(q, srIndexedParams(z, time.Now()), "occurrence"); err != nil {
		return nil, err
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

func (f *srFilter) match(m *mapping.Mapped) bool {
	if len(f.identifier) > 0 && !slices.ContainsFunc(f.identifier, func(t fhir.Token) bool { return identifierMatches(m, t) }) {
		return false
	}
	for _, ids := range f.patients {
		if m.PatientID == "" || !slices.Contains(ids, m.PatientID) {
			return false
		}
	}
	if len(f.status) > 0 && !slices.Contains(f.status, m.Status.Code()) {
		return false
	}
	return f.dates.match(m)
}

func identifierMatches(m *mapping.Mapped, t fhir.Token) bool {
	for sys, val := range m.Identifiers {
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
