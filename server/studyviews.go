package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// ImagingStudy and Task are two more views of each appointment pending
// reporting, beside its ServiceRequest and under the same id, served as
// ServiceRequest is: reads from QUBS; searches from the worklist index
// (studyindex.go), or, with the index off, by walking the QUBS worklist
// (collect), a bounded number of QUBS pages per bridge page.

// studyView is one of those views: its search and how an appointment is
// written as it.
type studyView struct {
	typ  string
	spec *fhir.SearchSpec
	// parse reads the search's criteria.
	parse func(s *Server, q *fhir.Query) (*viewFilter, error)
	// write appends m as the view's resource; f holds what the search
	// loaded for it (a Task's status).
	write func(dst []byte, m *mapping.Mapped, f *viewFilter) []byte
	// includeRef is the reference an _include follows from m, "" for none.
	includeRef func(m *mapping.Mapped, include string) string
	// indexedSpec and indexedParams are the search served from the
	// worklist index (studyindex.go).
	indexedSpec   *fhir.SearchSpec
	indexedParams func(z *mapping.Zones, now time.Time) []indexedParam
}

var imagingStudySearch = fhir.SearchSpec{
	Resource: "ImagingStudy",
	Params: []fhir.ParamSpec{
		{Name: "_id", Type: "token", Documentation: "Logical id (the ServiceRequest's)."},
		{Name: "identifier", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ImagingStudy-identifier",
			Documentation: "Study Instance UID (urn:dicom:uid|urn:oid:<uid>) or QUBS appointment id. A UID search walks the QUBS worklist."},
		{Name: "patient", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/clinical-patient", Documentation: "Patient/{id}."},
		{Name: "basedon", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ImagingStudy-basedon", Documentation: "ServiceRequest/{id}."},
		{Name: "modality", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ImagingStudy-modality",
			Documentation: "DICOM modality code (http://dicom.nema.org/resources/ontology/DCM|CT)."},
		{Name: "started", Type: "date", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ImagingStudy-started", Documentation: startedDoc},
		{Name: cursorParam, Type: "special", Documentation: "Opaque paging position; use the next link."},
	},
	Includes: []string{"ImagingStudy:patient", "ImagingStudy:basedon"},
}

var taskSearch = fhir.SearchSpec{
	Resource: "Task",
	Params: []fhir.ParamSpec{
		{Name: "_id", Type: "token", Documentation: "Logical id (the ServiceRequest's)."},
		{Name: "owner", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Task-owner", Documentation: "Practitioner/{id} of the assigned radiologist."},
		{Name: "status", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Task-status", Documentation: "requested, in-progress or completed."},
		{Name: "priority", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Task-priority", Documentation: "routine, urgent, asap or stat."},
		{Name: "focus", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Task-focus", Documentation: "ServiceRequest/{id}."},
		{Name: "patient", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Task-patient", Documentation: "Patient/{id}."},
		{Name: "_lastUpdated", Type: "date", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
			Documentation: "When the Task's status last changed (a report delivered); requested Tasks have no lastUpdated and never match."},
		{Name: cursorParam, Type: "special", Documentation: "Opaque paging position; use the next link."},
	},
	Includes: []string{"Task:focus", "Task:patient", "Task:owner"},
}

var (
	imagingStudyView = &studyView{typ: "ImagingStudy", spec: &imagingStudySearch, parse: parseImagingStudyFilter,
		indexedSpec: &indexedImagingStudySearch, indexedParams: imagingStudyIndexedParams,
		write: func(dst []byte, m *mapping.Mapped, _ *viewFilter) []byte { return m.AppendImagingStudy(dst) },
		includeRef: func(m *mapping.Mapped, inc string) string {
			switch inc {
			case "ImagingStudy:patient":
				return patientRef(m)
			case "ImagingStudy:basedon":
				return "ServiceRequest/" + m.ID
			}
			return ""
		}}
	taskView = &studyView{typ: "Task", spec: &taskSearch, parse: parseTaskFilter,
		indexedSpec: &indexedTaskSearch, indexedParams: taskIndexedParams,
		write: func(dst []byte, m *mapping.Mapped, f *viewFilter) []byte { return m.AppendTask(dst, f.tasks.of(m)) },
		includeRef: func(m *mapping.Mapped, inc string) string {
			switch inc {
			case "Task:focus":
				return "ServiceRequest/" + m.ID
			case "Task:patient":
				return patientRef(m)
			case "Task:owner":
				if m.RadiologistID != "" {
					return "Practitioner/" + m.RadiologistID
				}
			}
			return ""
		}}
)

func patientRef(m *mapping.Mapped) string {
	if m.PatientID == "" {
		return ""
	}
	return "Patient/" + m.PatientID
}

// viewFilter is the parsed criteria of an ImagingStudy or Task search.
// Every predicate must hold (the parameters, and repeats of one, are
// ANDed); each predicate is true when one of its alternatives is (the
// comma-separated values, ORed), as R4 search.html#combining says.
type viewFilter struct {
	// appt is the one appointment the search names (_id, basedon, focus
	// or an appointment-id identifier with one value): one QUBS read
	// answers it. "" when the search names none.
	appt string
	// empty is set when the criteria name two different appointments
	// ANDed: nothing can match.
	empty bool
	preds []func(*mapping.Mapped) bool
	// dates are the conditions on the study's own date (started), nil
	// when the view has none.
	dates *walkDates
	// tasks holds the Task statuses loaded for the appointments read, nil
	// for ImagingStudy.
	tasks *taskStates
}

func (f *viewFilter) filtered() bool { return len(f.preds) > 0 || f.empty || f.dates.filtered() }

func (f *viewFilter) match(m *mapping.Mapped) bool {
	if f.empty {
		return false
	}
	for _, p := range f.preds {
		if !p(m) {
			return false
		}
	}
	return f.dates.match(m)
}

// load is pageLoader's: Task searches read their statuses from the store
// once per run of appointments.
func (f *viewFilter) load(ctx context.Context, domain string, items []qubs.Appointment) error {
	if f.tasks == nil {
		return nil
	}
	ids := make([]string, len(items))
	for i := range items {
		ids[i] = items[i].AppointmentID
	}
	return f.tasks.load(ctx, domain, ids)
}

// name limits the search to one appointment: a second, different one
// leaves nothing to match.
func (f *viewFilter) name(appt string) {
	if f.appt != "" && f.appt != appt {
		f.empty = true
	}
	f.appt = appt
}

// groups returns each occurrence of a parameter split into its
// alternatives: AND of ORs.
func groups(q *fhir.Query, name string) [][]string {
	var out [][]string
	for _, v := range q.Params[name] {
		out = append(out, fhir.SplitValues(v))
	}
	return out
}

// tokenParam adds a predicate per occurrence of a token parameter: one of
// its alternatives must match.
func (f *viewFilter) tokenParam(q *fhir.Query, name string, matches func(m *mapping.Mapped, t fhir.Token) bool) {
	for _, alts := range groups(q, name) {
		toks := make([]fhir.Token, len(alts))
		for i, a := range alts {
			toks[i] = fhir.ParseToken(a)
		}
		f.preds = append(f.preds, func(m *mapping.Mapped) bool {
			return slices.ContainsFunc(toks, func(t fhir.Token) bool { return matches(m, t) })
		})
	}
}

// referenceParam adds a predicate per occurrence of a reference parameter
// to typ: id gives the id m references ("" for none).
func (f *viewFilter) referenceParam(q *fhir.Query, name, typ string, id func(m *mapping.Mapped) string) error {
	groups, err := referenceGroups(q, typ, name)
	if err != nil {
		return err
	}
	for _, ids := range groups {
		f.preds = append(f.preds, func(m *mapping.Mapped) bool {
			got := id(m)
			return got != "" && slices.Contains(ids, got)
		})
	}
	return nil
}

// serviceRequestParam is referenceParam for a reference to the
// appointment's ServiceRequest (basedon, focus), which also names the
// appointment for a direct read when it is the only alternative.
func (f *viewFilter) serviceRequestParam(q *fhir.Query, name string) error {
	for _, alts := range groups(q, name) {
		if len(alts) != 1 {
			continue
		}
		_, id, err := fhir.ParseReference(alts[0], "ServiceRequest")
		if err != nil {
			return err
		}
		appt, ok := appointmentID(id)
		if !ok {
			f.empty = true
			continue
		}
		f.name(appt)
	}
	return f.referenceParam(q, name, "ServiceRequest", func(m *mapping.Mapped) string { return m.ID })
}

// idParam reads _id, which names the appointment.
func (f *viewFilter) idParam(q *fhir.Query) error {
	for _, alts := range groups(q, "_id") {
		if len(alts) != 1 {
			return fhir.Errorf(http.StatusBadRequest, "not-supported", "_id takes a single id")
		}
		appt, ok := appointmentID(alts[0])
		if !ok {
			return fhir.Errorf(http.StatusBadRequest, "value", "_id %q is not a valid FHIR id", alts[0])
		}
		f.name(appt)
	}
	return nil
}

// dateParam adds one predicate for all occurrences of a date parameter
// (Task's _lastUpdated on the walk of QUBS): each narrows the window
// [since, until), which the instant at gives must fall in. The study's
// own date (started) is compared as the index compares it instead
// (walkDates).
func (f *viewFilter) dateParam(q *fhir.Query, name string, loc *time.Location, at func(m *mapping.Mapped) (time.Time, bool)) error {
	vs := q.Params[name]
	if len(vs) == 0 {
		return nil
	}
	var since, until time.Time
	for _, v := range vs {
		if strings.Contains(v, ",") {
			return fhir.Errorf(http.StatusBadRequest, "not-supported", "%s takes no alternatives; repeat it for a range", name)
		}
		d, err := fhir.ParseDateParam(v, loc)
		if err != nil {
			return err
		}
		if err := d.Narrow(&since, &until); err != nil {
			return err
		}
	}
	f.preds = append(f.preds, func(m *mapping.Mapped) bool {
		t, ok := at(m)
		return ok && (since.IsZero() || !t.Before(since)) && (until.IsZero() || t.Before(until))
	})
	return nil
}

func parseImagingStudyFilter(s *Server, q *fhir.Query) (*viewFilter, error) {
	f := &viewFilter{}
	if err := f.idParam(q); err != nil {
		return nil, err
	}
	for _, alts := range groups(q, "identifier") {
		if len(alts) == 1 {
			if appt := directIdentifier(&srFilter{identifier: []fhir.Token{fhir.ParseToken(alts[0])}}); appt != "" {
				f.name(appt)
			}
		}
	}
	f.tokenParam(q, "identifier", identifierMatches)
	if err := f.referenceParam(q, "patient", "Patient", func(m *mapping.Mapped) string { return m.PatientID }); err != nil {
		return nil, err
	}
	if err := f.serviceRequestParam(q, "basedon"); err != nil {
		return nil, err
	}
	f.tokenParam(q, "modality", func(m *mapping.Mapped, t fhir.Token) bool {
		code, ok := m.Modality()
		return ok && (!t.HasSystem || t.System == mapping.SystemDICOM) && (t.Code == "" || t.Code == code)
	})
	var err error
	if f.dates, err = parseWalkDates(q, imagingStudyIndexedParams(s.cfg.Zones, time.Now()), "started"); err != nil {
		return nil, err
	}
	return f, nil
}

func parseTaskFilter(s *Server, q *fhir.Query) (*viewFilter, error) {
	f := &viewFilter{tasks: s.newTaskStates()}
	if err := f.idParam(q); err != nil {
		return nil, err
	}
	if err := f.referenceParam(q, "owner", "Practitioner", func(m *mapping.Mapped) string { return m.RadiologistID }); err != nil {
		return nil, err
	}
	if err := f.referenceParam(q, "patient", "Patient", func(m *mapping.Mapped) string { return m.PatientID }); err != nil {
		return nil, err
	}
	if err := f.serviceRequestParam(q, "focus"); err != nil {
		return nil, err
	}
	f.tokenParam(q, "status", func(m *mapping.Mapped, t fhir.Token) bool {
		return (!t.HasSystem || t.System == "http://hl7.org/fhir/task-status") && t.Code == f.tasks.of(m).Status
	})
	f.tokenParam(q, "priority", func(m *mapping.Mapped, t fhir.Token) bool {
		p, ok := m.Priority()
		return ok && (!t.HasSystem || t.System == "http://hl7.org/fhir/request-priority") && t.Code == p
	})
	if err := f.dateParam(q, "_lastUpdated", s.cfg.Zones.Default(), func(m *mapping.Mapped) (time.Time, bool) {
		at := f.tasks.of(m).LastUpdated
		return at, !at.IsZero()
	}); err != nil {
		return nil, err
	}
	return f, nil
}

// taskStates are the Task statuses of the appointments a request read,
// by appointment id, from the reports the store holds.
type taskStates struct {
	st     store.Reports // nil without a store: every Task is requested
	byAppt map[string]mapping.TaskState
}

func (s *Server) newTaskStates() *taskStates {
	t := &taskStates{byAppt: map[string]mapping.TaskState{}}
	if s.cfg.Store != nil {
		t.st = s.cfg.Store
	}
	return t
}

func (t *taskStates) of(m *mapping.Mapped) mapping.TaskState {
	if st, ok := t.byAppt[m.AppointmentID()]; ok {
		return st
	}
	return mapping.TaskState{Status: mapping.TaskRequested}
}

// load reads the statuses of the appointments not yet loaded: one store
// search for all of them (reports are indexed by appointment), plus, for
// the rare report whose latest version is not delivered, a walk back to
// its newest delivered version.
func (t *taskStates) load(ctx context.Context, domain string, appts []string) error {
	var want []string
	for _, a := range appts {
		if _, ok := t.byAppt[a]; !ok {
			want = append(want, a)
			t.byAppt[a] = mapping.TaskState{Status: mapping.TaskRequested}
		}
	}
	if len(want) == 0 || t.st == nil {
		return nil
	}
	delivered := map[string][]mapping.DeliveredReport{}
	f := store.ReportFilter{AppointmentIDs: want, Limit: store.MaxSearchLimit}
	for {
		reports, next, err := t.st.SearchReports(ctx, domain, f)
		if err != nil {
			return fmt.Errorf("loading task statuses: %w", err)
		}
		for _, r := range reports {
			v := r
			for v.Delivery.State != store.DeliveryDelivered && v.Version > 1 {
				if v, err = t.st.ReportVersion(ctx, domain, r.ID, v.Version-1); err != nil {
					return fmt.Errorf("loading task statuses: %w", err)
				}
			}
			if v.Delivery.State == store.DeliveryDelivered && v.Delivery.DeliveredAt != nil {
				delivered[r.AppointmentID] = append(delivered[r.AppointmentID], mapping.DeliveredReport{Status: v.Status, DeliveredAt: *v.Delivery.DeliveredAt})
			}
		}
		if next == "" {
			break
		}
		f.After = next
	}
	for a, d := range delivered {
		t.byAppt[a] = mapping.TaskStateOf(d)
	}
	return nil
}

// read serves GET [base]/{typ}/{id}: the appointment from QUBS.
func (v *studyView) read(s *Server) func(*gin.Context) error {
	return func(c *gin.Context) error {
		domain := domainOf(c)
		notFound := fhir.Errorf(http.StatusNotFound, "not-found", "%s/%s is not known or no longer pending reporting", v.typ, c.Param("id"))
		apptID, ok := appointmentID(c.Param("id"))
		if !ok {
			return notFound
		}
		a, err := s.cfg.QUBS.GetPending(c.Request.Context(), domain, apptID)
		if qubs.KindOf(err) == qubs.KindNotFound {
			// Searches served from the index drop it at once, as after a
			// ServiceRequest read.
			s.indexGone(c, domain, apptID)
			return notFound
		}
		if err != nil {
			return err
		}
		m, err := s.mapAppointment(domain, a)
		if unrepresentable(err) {
			return notFound
		}
		if err != nil {
			return err
		}
		s.indexSaw(c, domain, a)
		f := &viewFilter{}
		if v.typ == "Task" {
			f.tasks = s.newTaskStates()
			if err := f.tasks.load(c.Request.Context(), domain, []string{apptID}); err != nil {
				return err
			}
		}
		disclose(c, v.typ+"/"+m.ID, patientRef(&m))
		s.writeRaw(c, http.StatusOK, v.write(make([]byte, 0, srSizeHint), &m, f))
		return nil
	}
}

// search serves GET [base]/{typ}: the worklist walk of ServiceRequest
// search, each match written as the view's resource.
func (v *studyView) search(s *Server) func(*gin.Context) error {
	return func(c *gin.Context) error {
		q, err := fhir.ParseSearch(c.Request.URL.Query(), c.GetHeader("Prefer"), *v.searchSpec(s), defaultCount, maxCount)
		if err != nil {
			return err
		}
		if s.indexed() {
			return v.searchIndexed(s, c, q)
		}
		f, err := v.parse(s, q)
		if err != nil {
			return err
		}
		domain := domainOf(c)
		binding := searchBinding(domain, v.typ, q)
		cur, err := s.worklistCursor(q, binding)
		if err != nil {
			return err
		}
		ctx := c.Request.Context()
		var matches []mapping.Mapped
		var next *srCursor
		var skipped int
		switch {
		case f.empty:
		case f.appt != "":
			matches, skipped, err = s.directMatch(ctx, domain, f.appt, f)
		default:
			var rest *pageRest
			matches, next, rest, skipped, err = s.collect(c, domain, q.Count, cur, f)
			if rest != nil {
				next.Rest = s.rests.put(rest)
			}
		}
		if err != nil {
			return err
		}
		bundle, base := s.searchBundle(c, v.typ, q)
		if next != nil {
			raw, _ := json.Marshal(next)
			bundle.SetLink("next", pageURL(base+"/"+v.typ, q.Used(), s.cursors.Seal(binding, raw)))
		}
		s.noteSkipped(c, bundle, skipped, "appointments")
		arena := getArena(len(matches) * (srSizeHint + includeSizeHint*len(q.Includes)))
		defer putArena(&arena)
		inc := newIncluder(c, bundle, base)
		for i := range matches {
			arena = v.addMatch(inc, arena, &matches[i], f, q.Includes)
		}
		inc.finish()
		s.write(c, http.StatusOK, bundle)
		return nil
	}
}

// addMatch writes m as the view's resource into arena and adds it to the
// searchset, with what includes names.
func (v *studyView) addMatch(in *includer, arena []byte, m *mapping.Mapped, f *viewFilter, includes []string) []byte {
	start := len(arena)
	arena = v.write(arena, m, f)
	in.bundle.AddMatchCompact(in.base+"/"+v.typ+"/"+m.ID, arena[start:])
	disclose(in.c, v.typ+"/"+m.ID, patientRef(m))
	for _, name := range includes {
		arena = in.add(arena, m, v.includeRef(m, name))
	}
	return arena
}

// directMatch answers a search that names one appointment with one QUBS
// read: the appointment when it is pending and matches f.
func (s *Server) directMatch(ctx context.Context, domain, appt string, f worklistFilter) (matches []mapping.Mapped, skipped int, err error) {
	a, err := s.cfg.QUBS.GetPending(ctx, domain, appt)
	switch {
	case qubs.KindOf(err) == qubs.KindNotFound:
		return nil, 0, nil
	case err != nil:
		return nil, 0, err
	}
	if l, ok := f.(pageLoader); ok {
		if err := l.load(ctx, domain, []qubs.Appointment{*a}); err != nil {
			return nil, 0, err
		}
	}
	m, err := s.mapAppointment(domain, a)
	switch {
	case unrepresentable(err):
		return nil, 1, nil
	case err != nil:
		return nil, 0, err
	case f.match(&m):
		return []mapping.Mapped{m}, 0, nil
	}
	return nil, 0, nil
}

// includer adds the included resources of a searchset, each once, and
// withholds those the caller's token may not read (with a warning).
type includer struct {
	c        *gin.Context
	bundle   *fhir.Bundle
	base     string
	included map[string]bool
	withheld map[string]bool
}

func newIncluder(c *gin.Context, b *fhir.Bundle, base string) *includer {
	return &includer{c: c, bundle: b, base: base, included: map[string]bool{}, withheld: map[string]bool{}}
}

// add appends the resource ref names, one of m's views or the resources
// it references, to arena and includes it; nothing for "" or a resource
// already included.
func (in *includer) add(arena []byte, m *mapping.Mapped, ref string) []byte {
	if ref == "" || in.included[ref] {
		return arena
	}
	// An include is a read of the included resource: the caller needs
	// the scope to read it directly.
	typ, id, _ := strings.Cut(ref, "/")
	if !canRead(in.c, typ) {
		in.withheld[typ] = true
		return arena
	}
	start := len(arena)
	switch {
	case typ == "ServiceRequest" && id == m.ID:
		arena = m.AppendServiceRequest(arena)
		disclose(in.c, ref, patientRef(m))
	default:
		var ok bool
		if arena, ok = m.AppendRelated(arena, ref); !ok {
			return arena
		}
		discloseResource(in.c, ref)
	}
	in.included[ref] = true
	in.bundle.AddIncludeCompact(in.base+"/"+ref, arena[start:])
	return arena
}

// addRaw includes a resource already written (a Task of a revinclude).
func (in *includer) addRaw(ref, patient string, body []byte) {
	if in.included[ref] {
		return
	}
	typ, _, _ := strings.Cut(ref, "/")
	if !canRead(in.c, typ) {
		in.withheld[typ] = true
		return
	}
	in.included[ref] = true
	in.bundle.AddIncludeCompact(in.base+"/"+ref, body)
	disclose(in.c, ref, patient)
}

// addDisclosed includes a resource whose disclosure its maker recorded
// (and whose type the caller may read), encoded by the samply models
// (so the Bundle checks it as it copies it).
func (in *includer) addDisclosed(ref string, body json.RawMessage) {
	if in.included[ref] {
		return
	}
	in.included[ref] = true
	in.bundle.AddInclude(in.base+"/"+ref, body)
}

// finish warns of what was withheld.
func (in *includer) finish() {
	if len(in.withheld) == 0 {
		return
	}
	types := make([]string, 0, len(in.withheld))
	for t := range in.withheld {
		types = append(types, t)
	}
	slices.Sort(types)
	in.bundle.AddOutcome(fhir.OutcomeJSON(fhir.Issue{Severity: "warning", Code: "suppressed",
		Diagnostics: "included resources left out, the token grants no read of: " + strings.Join(types, ", ")}))
}
