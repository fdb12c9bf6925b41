package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/sync/errgroup"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/worklist"
)

// WorklistIndex is the worklist index's sync side, as the server uses it
// (*worklist.Syncer implements it); the searches themselves read the
// store. docs/worklist-index.md describes both.
type WorklistIndex interface {
	// Ready returns the domain's sync state once its first complete walk
	// has happened, waiting for it until ctx ends.
	Ready(ctx context.Context, domain string) (*store.WorklistSync, error)
	// Saw records what a read of one appointment found.
	Saw(ctx context.Context, domain string, a *qubs.Appointment) error
	// Gone records that QUBS answered 404 for an appointment.
	Gone(ctx context.Context, domain, appointmentID string) error
	// Refresh re-reads one appointment after a write changed its study.
	Refresh(ctx context.Context, domain, appointmentID string) error
}

// ModalityDefinition is the canonical URL of the custom modality search
// parameter (docs/SearchParameter-ServiceRequest-modality.json).
const ModalityDefinition = mapping.Base + "SearchParameter/ServiceRequest-modality"

// ExtIndexAsOf is the Bundle.meta extension of an indexed search: the
// instant the last complete walk of QUBS began, so everything QUBS changed
// before it is in the answer.
const ExtIndexAsOf = mapping.Base + "StructureDefinition/worklist-index-as-of"

// Sort names of an indexed ServiceRequest search.
const sortNeededBy = "report-needed-by"

var indexedSorts = map[string]string{
	"priority": store.WorklistFieldPriorityRank, "occurrence": store.WorklistFieldOccurrenceStart,
	"_lastUpdated": store.WorklistFieldLastUpdated, sortNeededBy: store.WorklistFieldNeededBy, "_id": store.WorklistFieldID,
}

// indexedServiceRequestSearch is what ServiceRequest search understands
// when served from the worklist index; every parameter may be repeated
// (AND) and takes comma-separated alternatives (OR), per R4
// search.html#combining.
var indexedServiceRequestSearch = fhir.SearchSpec{
	Resource: "ServiceRequest",
	Params: []fhir.ParamSpec{
		{Name: "_id", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Resource-id", Documentation: "Logical id (the encoded QUBS appointmentId)."},
		{Name: "_lastUpdated", Type: "date", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated", Documentation: "When the bridge saw the ServiceRequest change (meta.lastUpdated); prefixes eq ne gt ge lt le sa eb ap."},
		{Name: "identifier", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/clinical-identifier", Documentation: "ServiceRequest.identifier: QUBS appointment id, or Study Instance UID (urn:dicom:uid|urn:oid:...)."},
		{Name: "patient", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/clinical-patient", Documentation: "ServiceRequest.subject: Patient/{id}."},
		{Name: "subject", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ServiceRequest-subject", Documentation: "ServiceRequest.subject: Patient/{id}."},
		{Name: "status", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ServiceRequest-status", Documentation: "ServiceRequest.status; pending reporting appointments are active."},
		{Name: "priority", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ServiceRequest-priority", Documentation: "ServiceRequest.priority: routine, urgent, asap, stat."},
		{Name: "performer", Type: "reference", Repeatable: true, Modifiers: []string{"missing"}, Definition: "http://hl7.org/fhir/SearchParameter/ServiceRequest-performer", Documentation: "ServiceRequest.performer, the assigned radiologist (Practitioner/{id}); :missing=true for none assigned."},
		{Name: "requester", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ServiceRequest-requester", Documentation: "ServiceRequest.requester: the referring Practitioner, or the clinic (Organization) when there is no doctor."},
		{Name: "code", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/clinical-code", Documentation: "ServiceRequest.code codings (service item numbers)."},
		{Name: "modality", Type: "token", Repeatable: true, Definition: ModalityDefinition, Documentation: "ServiceRequest.orderDetail: the DICOM modality (http://dicom.nema.org/resources/ontology/DCM|CT)."},
		{Name: "occurrence", Type: "date", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ServiceRequest-occurrence", Documentation: occurrenceDoc},
		{Name: "_sort", Type: "special", Documentation: "Comma-separated keys among priority (clinical urgency, stat first), occurrence, _lastUpdated, report-needed-by, _id; - for descending."},
		paramTotal, paramSummary,
		{Name: cursorParam, Type: "special", Documentation: "Opaque paging position; use the next link."},
	},
	Includes:    serviceRequestSearch.Includes,
	RevIncludes: []string{"Task:focus", "DiagnosticReport:based-on", revDocuments},
}

// occurrenceDoc describes the occurrence parameter, the same with the
// index on or off.
const occurrenceDoc = "ServiceRequest.occurrence[x] as a range: a date without a time is the whole day (month, year) at the study's site, " +
	"a time without an offset is in the server's zone (BRIDGE_DEFAULT_TIMEZONE), a period without a start reaches into the past. Prefixes eq ne gt ge lt le sa eb ap."

// revDocuments is the _revinclude of the referral documents and other
// attachments of the page's studies: they are in QUBS only, so it costs
// one QUBS call per study on the page (never per study on the worklist).
const revDocuments = "DocumentReference:related"

// srSearch is the ServiceRequest SearchSpec this server serves.
func (s *Server) srSearch() *fhir.SearchSpec {
	if s.indexed() {
		return &indexedServiceRequestSearch
	}
	return &serviceRequestSearch
}

// indexed reports whether ServiceRequest searches come from the index.
func (s *Server) indexed() bool { return s.cfg.Worklist != nil && s.cfg.Store != nil }

// searchIndexedServiceRequests serves a ServiceRequest search from the
// worklist index: no QUBS call, whatever the filter.
func (s *Server) searchIndexedServiceRequests(c *gin.Context, q *fhir.Query) error {
	// Only the includes read the appointment kept with each row.
	wq := store.WorklistQuery{ResourceOnly: len(q.Includes) == 0 && !slices.Contains(q.RevIncludes, "Task:focus") &&
		!slices.Contains(q.RevIncludes, revDocuments)}
	var err error
	if wq.Sort, err = indexedSort(first(q.Params["_sort"])); err != nil {
		return err
	}
	if wq.Where, err = indexedWhere(q, srIndexedParams(s.cfg.Zones, time.Now())); err != nil {
		return err
	}
	page, bundle, base, err := s.indexedSearch(c, q, "ServiceRequest", wq)
	if err != nil || page == nil {
		return err
	}
	for i := range page.Rows {
		r := &page.Rows[i]
		fullURL := base + "/ServiceRequest/" + r.ID
		bundle.AddMatchCompact(fullURL, r.Resource)
		disclose(c, "ServiceRequest/"+r.ID, r.Patient)
	}
	if err := s.indexedIncludes(c, q, bundle, base, page.Rows); err != nil {
		return err
	}
	s.write(c, http.StatusOK, bundle)
	return nil
}

// indexedSearch runs wq (its Where and Sort set) as the search q of typ
// and starts the searchset: how fresh the index is, the total and the
// next link. A nil page means the answer is written (_summary=count).
func (s *Server) indexedSearch(c *gin.Context, q *fhir.Query, typ string, wq store.WorklistQuery) (*store.WorklistPage, *fhir.Bundle, string, error) {
	ctx := c.Request.Context()
	domain := domainOf(c)
	// _sort takes several keys here: parseResults reads the rest.
	res, err := parseResults(&fhir.Query{Params: map[string][]string{"_total": q.Params["_total"], "_summary": q.Params["_summary"]}})
	if err != nil {
		return nil, nil, "", err
	}
	wq.Domain, wq.Count, wq.Total = domain, q.Count, res.total
	binding := searchBinding(domain, typ, q)
	raw, err := s.openCursor(q, binding)
	if err != nil {
		return nil, nil, "", err
	}
	wq.After = string(raw)
	sync, err := s.cfg.Worklist.Ready(ctx, domain)
	if err != nil {
		return nil, nil, "", indexError(err)
	}
	page, err := s.cfg.Store.SearchWorklist(ctx, wq)
	if err != nil {
		if store.KindOf(err) == store.KindInvalid {
			return nil, nil, "", fhir.Errorf(http.StatusBadRequest, "invalid", "the paging cursor is not valid for this search")
		}
		return nil, nil, "", fmt.Errorf("searching the worklist index: %w", err)
	}
	bundle, base := s.searchBundle(c, typ, q)
	if sync.Finished != nil {
		bundle.LastUpdated = *sync.Finished
		bundle.MetaExtension = fmt.Appendf(nil, `[{"url":%q,"valueInstant":%q}]`, ExtIndexAsOf, sync.Started.UTC().Format(time.RFC3339Nano))
	}
	if page.Total >= 0 {
		bundle.SetTotal(page.Total)
	}
	if res.countOnly {
		s.write(c, http.StatusOK, bundle)
		return nil, nil, "", nil
	}
	if page.Next != "" {
		bundle.SetLink("next", pageURL(base+"/"+typ, q.Used(), s.cursors.Seal(binding, []byte(page.Next))))
	}
	return page, bundle, base, nil
}

// indexError turns a failure to get the index ready into an answer: a
// domain whose first walk has not finished is unavailable for now.
func indexError(err error) error {
	if errors.Is(err, worklist.ErrNotSynced) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fhir.Errorf(http.StatusServiceUnavailable, "transient", "the worklist index of this domain is being built; try again shortly")
	}
	return fmt.Errorf("worklist index: %w", err)
}

// indexedIncludes adds the _include and _revinclude resources of the
// rows: the referenced Patient, Practitioner and Organization come from
// the appointment kept in each row, Tasks and DiagnosticReports from the
// store. None costs a QUBS call.
func (s *Server) indexedIncludes(c *gin.Context, q *fhir.Query, bundle *fhir.Bundle, base string, rows []store.WorklistRow) error {
	withTasks := slices.Contains(q.RevIncludes, "Task:focus")
	withDocs := slices.Contains(q.RevIncludes, revDocuments)
	if len(q.Includes) == 0 && !withTasks && !withDocs && !slices.Contains(q.RevIncludes, "DiagnosticReport:based-on") {
		return nil
	}
	ctx := c.Request.Context()
	domain := domainOf(c)
	appts := make([]qubs.Appointment, len(rows))
	ids := make([]string, len(rows))
	for i := range rows {
		if err := json.Unmarshal(rows[i].Appointment, &appts[i]); err != nil {
			return fmt.Errorf("reading an indexed appointment: %w", err)
		}
		ids[i] = rows[i].AppointmentID
	}
	var tasks *taskStates
	if withTasks {
		tasks = s.newTaskStates()
		if err := tasks.load(ctx, domain, ids); err != nil {
			return err
		}
	}
	arena := getArena(len(rows) * includeSizeHint * (len(q.Includes) + 1))
	defer putArena(&arena)
	inc := newIncluder(c, bundle, base)
	for i := range appts {
		m, err := s.mapAppointment(domain, &appts[i])
		if err != nil {
			return err
		}
		for _, name := range q.Includes {
			arena = inc.add(arena, &m, includeRef(&m, name))
		}
		if tasks != nil {
			start := len(arena)
			arena = m.AppendTask(arena, tasks.of(&m))
			inc.addRaw("Task/"+m.ID, patientRef(&m), arena[start:])
		}
	}
	if slices.Contains(q.RevIncludes, "DiagnosticReport:based-on") {
		if err := s.includeReports(c, inc, base, ids); err != nil {
			return err
		}
	}
	if withDocs {
		if err := s.includeDocuments(c, inc, appts); err != nil {
			return err
		}
	}
	inc.finish()
	return nil
}

// documentFetches bounds the QUBS calls one page's documents make at once.
const documentFetches = 8

// includeDocuments adds the DocumentReferences of the appointments'
// attachments, as DocumentReference?related= serves them: one QUBS call
// per study, documentFetches at a time. A study that left QUBS since the
// walk has none; any other QUBS failure fails the search (a page without
// some of the documents asked for would look complete).
func (s *Server) includeDocuments(c *gin.Context, inc *includer, appts []qubs.Appointment) error {
	if !canRead(c, "DocumentReference") {
		inc.withheld["DocumentReference"] = true
		return nil
	}
	ctx, domain := c.Request.Context(), domainOf(c)
	atts := make([][]qubs.Attachment, len(appts))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(documentFetches)
	for i := range appts {
		g.Go(func() error {
			list, err := s.cfg.QUBS.ListAttachments(gctx, domain, appts[i].AppointmentID, qubs.AttachmentOptions{})
			if qubs.KindOf(err) == qubs.KindNotFound {
				return nil
			}
			atts[i] = list
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	skipped := 0
	for i := range appts {
		for _, att := range atts[i] {
			doc, id, err := s.documentReference(c, &appts[i], att)
			if unrepresentable(err) {
				skipped++
				continue
			}
			if err != nil {
				return err
			}
			inc.addDisclosed("DocumentReference/"+id, doc)
		}
	}
	s.noteSkipped(c, inc.bundle, skipped, "attachments")
	return nil
}

// includeReports adds the reports the store holds for the appointments
// (DiagnosticReport.basedOn the ServiceRequest), each in its latest
// version.
func (s *Server) includeReports(c *gin.Context, inc *includer, base string, appts []string) error {
	f := store.ReportFilter{AppointmentIDs: appts, Limit: store.MaxSearchLimit}
	for {
		reports, next, err := s.cfg.Store.SearchReports(c.Request.Context(), domainOf(c), f)
		if err != nil {
			return fmt.Errorf("revincluding reports: %w", err)
		}
		for _, r := range reports {
			body, err := reportBody(r, base)
			if err != nil {
				continue // purged (410) or unservable: the report search says which
			}
			inc.addRaw("DiagnosticReport/"+r.ID, r.PatientRef, body)
		}
		if next == "" {
			return nil
		}
		f.After = next
	}
}

// indexedSort reads _sort: comma-separated keys, - for descending.
func indexedSort(v string) ([]store.WorklistSortKey, error) {
	if v == "" {
		return nil, nil
	}
	var keys []store.WorklistSortKey
	for _, k := range strings.Split(v, ",") {
		desc := strings.HasPrefix(k, "-")
		field, ok := indexedSorts[strings.TrimPrefix(k, "-")]
		if !ok {
			return nil, fhir.Errorf(http.StatusBadRequest, "not-supported", "_sort takes priority, occurrence, _lastUpdated, %s or _id (- for descending), comma-separated", sortNeededBy)
		}
		keys = append(keys, store.WorklistSortKey{Field: field, Desc: desc})
	}
	return keys, nil
}

// FHIR code systems of ServiceRequest.status and .priority: a token with
// another system matches nothing.
const (
	systemRequestStatus   = "http://hl7.org/fhir/request-status"
	systemRequestPriority = "http://hl7.org/fhir/request-priority"
)

// never is a condition no row meets (every row has an id).
var never = []store.WorklistCond{{Field: store.WorklistFieldID, Op: "=", Value: ""}}

// indexedParam is how one search parameter of an indexed search becomes
// index conditions: alt gives the alternatives one value stands for.
type indexedParam struct {
	name string
	alt  altFunc
}

// altFunc gives the alternatives (each a conjunction) of one value.
type altFunc func(v string) ([][]store.WorklistCond, error)

// indexedWhere turns the search parameters into index clauses: each
// occurrence of a parameter one clause (AND), its comma-separated values
// the clause's alternatives (OR).
func indexedWhere(q *fhir.Query, params []indexedParam) ([]store.WorklistClause, error) {
	var where []store.WorklistClause
	for _, p := range params {
		for _, occ := range q.Params[p.name] {
			var clause store.WorklistClause
			for _, v := range fhir.SplitValues(occ) {
				alts, err := p.alt(v)
				if err != nil {
					return nil, err
				}
				clause = append(clause, alts...)
			}
			where = append(where, clause)
		}
	}
	return where, nil
}

func oneAlt(cs ...store.WorklistCond) [][]store.WorklistCond { return [][]store.WorklistCond{cs} }

func eqCond(field string, v any) store.WorklistCond {
	return store.WorklistCond{Field: field, Op: "=", Value: v}
}

// tokenAlt matches the row's tokens of param (identifier, code, modality).
func tokenAlt(param string) altFunc {
	return func(v string) ([][]store.WorklistCond, error) {
		t := fhir.ParseToken(v)
		return oneAlt(store.WorklistCond{Field: param, Token: &store.WorklistTokenMatch{System: t.System, Code: t.Code, HasSystem: t.HasSystem}}), nil
	}
}

// codeAlt matches a code field whose codes are of system.
func codeAlt(field, system string) altFunc {
	return func(v string) ([][]store.WorklistCond, error) {
		t := fhir.ParseToken(v)
		if t.HasSystem && t.System != system {
			return oneAlt(never...), nil
		}
		if t.Code == "" {
			return oneAlt(store.WorklistCond{Field: field, Op: "notnull"}), nil
		}
		return oneAlt(eqCond(field, t.Code)), nil
	}
}

// refAlt matches a reference column; a bare id matches any of types.
func refAlt(field string, types ...string) altFunc {
	return func(v string) ([][]store.WorklistCond, error) {
		typ, id, err := fhir.ParseReference(v, types[0])
		if err != nil {
			return nil, err
		}
		if strings.Contains(v, "/") {
			return oneAlt(eqCond(field, typ+"/"+id)), nil
		}
		var alts [][]store.WorklistCond
		for _, typ := range types {
			alts = append(alts, []store.WorklistCond{eqCond(field, typ+"/"+id)})
		}
		return alts, nil
	}
}

// typedRefAlt matches a reference to typ only, as the ImagingStudy and
// Task parameters are defined (another type is a 400, as on the walk of
// QUBS they replace); bare, the reference column holds ids alone
// (ServiceRequest: the row's id).
func typedRefAlt(name, field, typ string, bare bool) altFunc {
	return func(v string) ([][]store.WorklistCond, error) {
		t, id, err := fhir.ParseReference(v, typ)
		if err != nil {
			return nil, err
		}
		if t != typ {
			return nil, fhir.Errorf(http.StatusBadRequest, "value", "%s must reference a %s", name, typ)
		}
		if bare {
			return oneAlt(eqCond(field, id)), nil
		}
		return oneAlt(eqCond(field, typ+"/"+id)), nil
	}
}

// dateAlt compares a date parameter with the range [start, end) of a
// row (instant: one column, an instant).
func dateAlt(start, end string, instant bool, zone *time.Location, now time.Time) altFunc {
	return func(v string) ([][]store.WorklistCond, error) {
		d, err := fhir.ParseDateParam(v, zone)
		if err != nil {
			return nil, err
		}
		return dateAlternatives(d, start, end, instant, now), nil
	}
}

// siteDateAlt compares a date parameter with a study's own date, a
// range [start, end) of instants that is local to its site: a value
// without a time is the whole day (month, year) at each study's site, the
// product's rule and R4's ("Dates do not have time zones, and time zones
// should not be considered", search.html#date). The row keeps the range
// as its site's wall clock too (localStart, localEnd: text that sorts as
// the times do), so such a value is one range of wall-clock text for
// every site: the day QUBS gives the study, whatever its zone. A row
// written before those columns (row_format below
// store.WorklistRowFormat, until the next walk) is compared as before,
// by the instants of the value's span in the default zone. A value with a
// time is an instant, compared with the instants.
func siteDateAlt(start, end, localStart, localEnd string, z *mapping.Zones, now time.Time) altFunc {
	return func(v string) ([][]store.WorklistCond, error) {
		d, err := fhir.ParseDateParam(v, z.Default())
		if err != nil {
			return nil, err
		}
		if !d.Calendar {
			return dateAlternatives(d, start, end, false, now), nil
		}
		// The span as a wall clock: read in UTC, its times print as the
		// calendar says ("2031-03-05T00:00:00"). A row without the text
		// (NULL) meets none of these; nor does one an older release
		// rewrote (its row_format, and perhaps its date, changed; the
		// text did not).
		current := store.WorklistCond{Field: store.WorklistFieldRowFormat, Op: ">=", Value: store.WorklistRowFormat}
		older := store.WorklistCond{Field: store.WorklistFieldRowFormat, Op: "<", Value: store.WorklistRowFormat}
		var alts [][]store.WorklistCond
		for _, alt := range dateAlternatives(d.In(time.UTC), localStart, localEnd, false, now) {
			for i, c := range alt {
				if t, ok := c.Value.(time.Time); ok {
					alt[i].Value = store.WorklistLocalText(t)
				}
			}
			alts = append(alts, append(slices.Clip(alt), current))
		}
		for _, alt := range dateAlternatives(d, start, end, false, now) {
			alts = append(alts, append([]store.WorklistCond{older}, alt...))
		}
		return alts, nil
	}
}

func idAlt(v string) ([][]store.WorklistCond, error) {
	if _, ok := appointmentID(v); !ok {
		return nil, fhir.Errorf(http.StatusBadRequest, "value", "_id %q is not a valid FHIR id", v)
	}
	return oneAlt(eqCond(store.WorklistFieldID, v)), nil
}

// priorityAlt matches by rank, which the index orders on: the same rows,
// found without a scan.
func priorityAlt(v string) ([][]store.WorklistCond, error) {
	t := fhir.ParseToken(v)
	rank := store.WorklistPriorityRank(t.Code)
	switch {
	case t.HasSystem && t.System != systemRequestPriority, t.Code != "" && rank == store.WorklistPriorityRank(""):
		return oneAlt(never...), nil
	case t.Code == "":
		return oneAlt(store.WorklistCond{Field: store.WorklistFieldPriority, Op: "notnull"}), nil
	}
	return oneAlt(store.WorklistCond{Field: store.WorklistFieldPriorityRank, Op: "=", Value: rank}), nil
}

// srIndexedParams are the ServiceRequest search parameters, as index
// conditions.
func srIndexedParams(z *mapping.Zones, now time.Time) []indexedParam {
	return []indexedParam{
		{"_id", idAlt},
		{"identifier", tokenAlt("identifier")},
		{"code", tokenAlt("code")},
		{"modality", tokenAlt("modality")},
		{"patient", refAlt(store.WorklistFieldPatient, "Patient")},
		{"subject", refAlt(store.WorklistFieldPatient, "Patient")},
		{"performer", refAlt(store.WorklistFieldPerformer, "Practitioner")},
		{"requester", refAlt(store.WorklistFieldRequester, "Practitioner", "Organization")},
		{"status", codeAlt(store.WorklistFieldStatus, systemRequestStatus)},
		{"priority", priorityAlt},
		{"performer:missing", func(v string) ([][]store.WorklistCond, error) {
			switch v {
			case "true":
				return oneAlt(store.WorklistCond{Field: store.WorklistFieldPerformer, Op: "null"}), nil
			case "false":
				return oneAlt(store.WorklistCond{Field: store.WorklistFieldPerformer, Op: "notnull"}), nil
			}
			return nil, fhir.Errorf(http.StatusBadRequest, "value", "performer:missing takes true or false")
		}},
		{"occurrence", siteDateAlt(store.WorklistFieldOccurrenceStart, store.WorklistFieldOccurrenceEnd,
			store.WorklistFieldOccurrenceLocalStart, store.WorklistFieldOccurrenceLocalEnd, z, now)},
		// When the bridge saw a change is no site's: a date is a day in
		// the server's zone.
		{"_lastUpdated", dateAlt(store.WorklistFieldLastUpdated, store.WorklistFieldLastUpdated, true, z.Default(), now)},
	}
}

// dateAlternatives are the conditions of a date parameter on a target
// range [start, end) (R4 search.html#prefix, the ranges compared as the
// text says): an instant's range is [t, t+1µs), so "end > X" is t >= X
// and "end <= X" is t < X. A range without a start (an occurrencePeriod
// with an end only) is open into the past: R4 reads a Period's missing
// start as a boundary not known, and search.html#date compares a Period
// as a range whose "lower bound may not be actually specified", so it
// reaches below any value: lt, le and ne find it, eq and sa never do, and
// gt, ge and eb compare its end.
func dateAlternatives(d fhir.DateParam, start, end string, instant bool, now time.Time) [][]store.WorklistCond {
	c := func(field, op string, t time.Time) store.WorklistCond {
		if instant && field == end {
			switch op {
			case ">":
				op = ">="
			case "<=":
				op = "<"
			}
		}
		return store.WorklistCond{Field: field, Op: op, Value: t}
	}
	within := []store.WorklistCond{c(start, ">=", d.Lo), c(end, "<=", d.Hi)}
	// below holds for a range open into the past: its end is known, its
	// start not (no end means no occurrence at all).
	var below [][]store.WorklistCond
	if !instant {
		below = [][]store.WorklistCond{{{Field: start, Op: "null"}, {Field: end, Op: "notnull"}}}
	}
	switch d.Prefix {
	case "ne":
		return append([][]store.WorklistCond{{c(start, "<", d.Lo)}, {c(end, ">", d.Hi)}}, below...)
	case "gt":
		return [][]store.WorklistCond{{c(end, ">", d.Hi)}}
	case "lt":
		return append([][]store.WorklistCond{{c(start, "<", d.Lo)}}, below...)
	case "ge":
		return [][]store.WorklistCond{{c(end, ">", d.Hi)}, within}
	case "le":
		return append([][]store.WorklistCond{{c(start, "<", d.Lo)}, within}, below...)
	case "sa":
		return [][]store.WorklistCond{{c(start, ">=", d.Hi)}}
	case "eb":
		return [][]store.WorklistCond{{c(end, "<=", d.Lo)}}
	case "ap":
		// Approximately: the value widened by a tenth of its distance
		// from now (R4 leaves the amount to the server), overlapping.
		gap := now.Sub(d.Lo)
		if gap < 0 {
			gap = -gap
		}
		w := gap / 10
		alts := [][]store.WorklistCond{{c(start, "<", d.Hi.Add(w)), c(end, ">", d.Lo.Add(-w))}}
		if !instant {
			alts = append(alts, []store.WorklistCond{{Field: start, Op: "null"}, c(end, ">", d.Lo.Add(-w))})
		}
		return alts
	}
	return [][]store.WorklistCond{within}
}

// indexSaw tells the index what a read or write found of one study. A
// failure only costs freshness until the next walk: it is logged (the
// error names no PHI) and the request goes on.
func (s *Server) indexSaw(c *gin.Context, domain string, a *qubs.Appointment) {
	if !s.indexed() || a == nil {
		return
	}
	if err := s.cfg.Worklist.Saw(c.Request.Context(), domain, a); err != nil {
		s.log.Warn("worklist index: refresh failed", "correlation_id", correlationIDOf(c), "error", err.Error())
	}
}

// indexGone drops a study QUBS no longer has from the index at once.
func (s *Server) indexGone(c *gin.Context, domain, appointmentID string) {
	if !s.indexed() {
		return
	}
	if err := s.cfg.Worklist.Gone(c.Request.Context(), domain, appointmentID); err != nil {
		s.log.Warn("worklist index: drop failed", "correlation_id", correlationIDOf(c), "error", err.Error())
	}
}

// indexedRecently reports whether the index finished a walk of domain
// within knownDomainTTL (by any replica).
func (s *Server) indexedRecently(c *gin.Context, domain string) bool {
	if !s.indexed() {
		return false
	}
	st, err := s.cfg.Store.WorklistSyncState(c.Request.Context(), domain)
	return err == nil && st.Finished != nil && time.Since(*st.Finished) < knownDomainTTL
}
