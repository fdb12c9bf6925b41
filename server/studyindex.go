package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// ImagingStudy and Task searches served from the worklist index, as
// ServiceRequest's are (docs/worklist-index.md): every parameter may be
// repeated (AND) and takes comma-separated alternatives (OR), no search
// calls QUBS, pages are keyset cursors in id order. Each row keeps the
// appointment as received, so the resources are written from it exactly
// as a read writes them.

var indexedImagingStudySearch = fhir.SearchSpec{
	Resource: "ImagingStudy",
	Params: []fhir.ParamSpec{
		{Name: "_id", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Resource-id", Documentation: "Logical id (the ServiceRequest's)."},
		{Name: "identifier", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ImagingStudy-identifier",
			Documentation: "Study Instance UID (urn:dicom:uid|urn:oid:<uid>; urn:dicom:uid|<uid> is taken too) or QUBS appointment id."},
		{Name: "patient", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/clinical-patient", Documentation: "ImagingStudy.subject: Patient/{id}."},
		{Name: "subject", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ImagingStudy-subject", Documentation: "ImagingStudy.subject: Patient/{id}."},
		{Name: "basedon", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ImagingStudy-basedon", Documentation: "ServiceRequest/{id}."},
		{Name: "modality", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ImagingStudy-modality",
			Documentation: "DICOM modality code (http://dicom.nema.org/resources/ontology/DCM|CT)."},
		{Name: "started", Type: "date", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/ImagingStudy-started", Documentation: startedDoc},
		paramTotal, paramSummary,
		{Name: cursorParam, Type: "special", Documentation: "Opaque paging position; use the next link."},
	},
	Includes: imagingStudySearch.Includes,
}

// startedDoc describes the started parameter, the same with the index on
// or off.
const startedDoc = "ImagingStudy.started as a range: a dateTime its second, a date alone (no start time) the whole day at the study's site; " +
	"a search date without a time is the whole day (month, year) at each study's site. Prefixes eq ne gt ge lt le sa eb ap."

var indexedTaskSearch = fhir.SearchSpec{
	Resource: "Task",
	Params: []fhir.ParamSpec{
		{Name: "_id", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Resource-id", Documentation: "Logical id (the ServiceRequest's)."},
		{Name: "owner", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Task-owner", Documentation: "Practitioner/{id} of the assigned radiologist."},
		{Name: "status", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Task-status", Documentation: "requested, in-progress (a preliminary report delivered) or completed (a final delivered)."},
		{Name: "priority", Type: "token", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Task-priority", Documentation: "routine, urgent, asap or stat."},
		{Name: "focus", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Task-focus", Documentation: "ServiceRequest/{id}."},
		{Name: "patient", Type: "reference", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Task-patient", Documentation: "Patient/{id}."},
		{Name: "_lastUpdated", Type: "date", Repeatable: true, Definition: "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
			Documentation: "meta.lastUpdated: the later of when the bridge saw the study change and when its status last changed (a report delivered)."},
		paramTotal, paramSummary,
		{Name: cursorParam, Type: "special", Documentation: "Opaque paging position; use the next link."},
	},
	Includes: taskSearch.Includes,
}

// systemTaskStatus is the code system of Task.status.
const systemTaskStatus = "http://hl7.org/fhir/task-status"

func imagingStudyIndexedParams(z *mapping.Zones, now time.Time) []indexedParam {
	patient := typedRefAlt("patient", store.WorklistFieldPatient, "Patient", false)
	return []indexedParam{
		{"_id", idAlt},
		{"identifier", uidAlt},
		{"patient", patient},
		{"subject", typedRefAlt("subject", store.WorklistFieldPatient, "Patient", false)},
		{"basedon", typedRefAlt("basedon", store.WorklistFieldID, "ServiceRequest", true)},
		// ServiceRequest.orderDetail holds the same DCM coding as
		// ImagingStudy.modality (mapping's modalityCoding), and nothing
		// else: its tokens answer.
		{"modality", tokenAlt("modality")},
		{"started", siteDateAlt(store.WorklistFieldStartedStart, store.WorklistFieldStartedEnd,
			store.WorklistFieldStartedLocalStart, store.WorklistFieldStartedLocalEnd, z, now)},
	}
}

func taskIndexedParams(z *mapping.Zones, now time.Time) []indexedParam {
	return []indexedParam{
		{"_id", idAlt},
		{"owner", typedRefAlt("owner", store.WorklistFieldPerformer, "Practitioner", false)},
		{"status", codeAlt(store.WorklistFieldTaskStatus, systemTaskStatus)},
		{"priority", priorityAlt},
		{"focus", typedRefAlt("focus", store.WorklistFieldID, "ServiceRequest", true)},
		{"patient", typedRefAlt("patient", store.WorklistFieldPatient, "Patient", false)},
		{"_lastUpdated", dateAlt(store.WorklistFieldTaskLastUpdated, store.WorklistFieldTaskLastUpdated, true, z.Default(), now)},
	}
}

// uidAlt is identifier's token, and a Study Instance UID given without
// its urn:oid: prefix (urn:dicom:uid|1.2.3, as DICOM spells it) matches
// the identifier as FHIR spells it (urn:oid:1.2.3) too.
func uidAlt(v string) ([][]store.WorklistCond, error) {
	alts, _ := tokenAlt("identifier")(v)
	t := fhir.ParseToken(v)
	if t.HasSystem && t.System == mapping.SystemDICOMUID && t.Code != "" && !strings.HasPrefix(t.Code, "urn:") {
		more, _ := tokenAlt("identifier")(mapping.SystemDICOMUID + "|urn:oid:" + t.Code)
		alts = append(alts, more...)
	}
	return alts, nil
}

// searchSpec is the view's search as this server serves it.
func (v *studyView) searchSpec(s *Server) *fhir.SearchSpec {
	if s.indexed() {
		return v.indexedSpec
	}
	return v.spec
}

// searchIndexed serves the view's search from the worklist index.
func (v *studyView) searchIndexed(s *Server, c *gin.Context, q *fhir.Query) error {
	where, err := indexedWhere(q, v.indexedParams(s.cfg.Zones, time.Now()))
	if err != nil {
		return err
	}
	page, bundle, base, err := s.indexedSearch(c, q, v.typ, store.WorklistQuery{Where: where})
	if err != nil || page == nil {
		return err
	}
	domain := domainOf(c)
	f := &viewFilter{}
	if v.typ == "Task" {
		f.tasks = s.newTaskStates()
		ids := make([]string, len(page.Rows))
		for i := range page.Rows {
			ids[i] = page.Rows[i].AppointmentID
		}
		if err := f.tasks.load(c.Request.Context(), domain, ids); err != nil {
			return err
		}
		for i := range page.Rows {
			f.tasks.changedAt(page.Rows[i].AppointmentID, page.Rows[i].LastUpdated)
		}
	}
	arena := getArena(len(page.Rows) * (srSizeHint + includeSizeHint*len(q.Includes)))
	defer putArena(&arena)
	inc := newIncluder(c, bundle, base)
	skipped := 0
	for i := range page.Rows {
		var a qubs.Appointment
		if err := json.Unmarshal(page.Rows[i].Appointment, &a); err != nil {
			return fmt.Errorf("reading an indexed appointment: %w", err)
		}
		m, err := s.mapAppointment(domain, &a)
		if unrepresentable(err) {
			skipped++
			continue
		}
		if err != nil {
			return err
		}
		arena = v.addMatch(inc, arena, &m, f, q.Includes)
	}
	inc.finish()
	s.noteSkipped(c, bundle, skipped, "appointments")
	s.write(c, http.StatusOK, bundle)
	return nil
}

// changedAt makes the Task of appt last updated no earlier than at: a
// Task served from the index changes with its study (the row's
// lastUpdated) as well as with its status.
func (t *taskStates) changedAt(appt string, at time.Time) {
	st, ok := t.byAppt[appt]
	if !ok {
		st = mapping.TaskState{Status: mapping.TaskRequested}
	}
	if at.After(st.LastUpdated) {
		st.LastUpdated = at
	}
	t.byAppt[appt] = st
}
