package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/worklist"
)

// withIndex serves ServiceRequest searches from the worklist index, on
// the store an earlier option gave (SQLite when none did). The test walks
// QUBS itself (indexEnv.sync): nothing waits for an interval.
func withIndex(t testing.TB, syncer **worklist.Syncer) envOption {
	return func(so *qubssim.Options, qc *qubs.Config, sc *server.Config) {
		if sc.Store == nil {
			withStore(t)(so, qc, sc)
		}
		s := &worklist.Syncer{Store: sc.Store, Owner: "test-replica"}
		sc.Worklist = s
		*syncer = s
	}
}

func syncIndex(t testing.TB, s *worklist.Syncer, domain string) worklist.Result {
	t.Helper()
	res, err := s.SyncOnce(context.Background(), domain)
	require.NoError(t, err)
	return res
}

// indexedEnv is an env of n seeded appointments with the index on
// SQLite, walked once; it returns the first domain.
func indexedEnv(t testing.TB, n int) (*env, *worklist.Syncer, string) {
	t.Helper()
	return indexedEnvOn(t, withStore, n)
}

// indexedEnvOn is indexedEnv on the store opt gives.
func indexedEnvOn(t testing.TB, opt func(testing.TB) envOption, n int) (*env, *worklist.Syncer, string) {
	t.Helper()
	var syncer *worklist.Syncer
	e := newEnv(t, func(so *qubssim.Options, _ *qubs.Config, _ *server.Config) { so.Appointments = n }, opt(t), withIndex(t, &syncer))
	domain := e.sim.Domains()[0]
	syncIndex(t, syncer, domain)
	return e, syncer, domain
}

// walkIDs follows next links from u and returns the ids of the matches.
func walkIDs(t testing.TB, u string) []string {
	t.Helper()
	var ids []string
	for u != "" {
		r := get(t, u)
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		b := r.json(t)
		for _, e := range entries(b, "match") {
			ids = append(ids, resourceOf(e)["id"].(string))
		}
		u = link(b, "next")
	}
	return ids
}

// pendingSRs maps the simulator's pending appointments of domain.
func pendingSRs(t testing.TB, e *env, domain string) []*mapping.Worklist {
	t.Helper()
	var out []*mapping.Worklist
	for _, id := range e.sim.PendingIDs(domain) {
		a, _ := e.sim.Appointment(domain, id)
		w, err := mapping.FromAppointment(&a, nil)
		if err != nil {
			continue
		}
		out = append(out, w)
	}
	return out
}

func srIDs(ws []*mapping.Worklist, keep func(*mapping.Worklist) bool) []string {
	var ids []string
	for _, w := range ws {
		if keep(w) {
			ids = append(ids, *w.ServiceRequest.Id)
		}
	}
	sort.Strings(ids)
	return ids
}

func sorted(ids []string) []string {
	ids = slices.Clone(ids)
	sort.Strings(ids)
	return ids
}

// TestIndexedSearchConverges: on both stores, searches answer from the
// index without a QUBS call, and follow QUBS after arrivals, changes and
// departures once a walk ran.
func TestIndexedSearchConverges(t *testing.T) {
	for name, opt := range map[string]func(testing.TB) envOption{"sqlite": withStore, "postgres": withPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e, syncer, domain := indexedEnvOn(t, opt, 200)

			calls := len(e.sim.Requests())
			want := srIDs(pendingSRs(t, e, domain), func(*mapping.Worklist) bool { return true })
			assert.Equal(t, want, sorted(walkIDs(t, e.base+"/ServiceRequest?_count=40")))
			r := get(t, e.base+"/ServiceRequest?_total=accurate&_count=3")
			b := r.json(t)
			assert.EqualValues(t, len(want), b["total"])
			meta := b["meta"].(map[string]any)
			assert.NotEmpty(t, meta["lastUpdated"], "the Bundle says when the index was last complete")
			ext := meta["extension"].([]any)[0].(map[string]any)
			assert.Equal(t, server.ExtIndexAsOf, ext["url"])
			sr := resourceOf(entries(b, "match")[0])
			assert.NotEmpty(t, sr["meta"].(map[string]any)["lastUpdated"])
			assert.Equal(t, calls, len(e.sim.Requests()), "searches never call QUBS")

			e.sim.ChurnStep(25)
			syncIndex(t, syncer, domain)
			want = srIDs(pendingSRs(t, e, domain), func(*mapping.Worklist) bool { return true })
			assert.Equal(t, want, sorted(walkIDs(t, e.base+"/ServiceRequest?_count=500")))
		})
	}
}

// TestIndexedReadGone: a study that left QUBS between a walk and a read
// answers 404 and leaves the index at once; a read that finds a change
// refreshes its row.
func TestIndexedReadGone(t *testing.T) {
	t.Parallel()
	e, syncer, domain := indexedEnv(t, 60)
	ids := e.sim.PendingIDs(domain)
	gone, changed := ids[0], ids[1]
	goneSR, _ := mapping.ServiceRequestID(gone)
	changedSR, _ := mapping.ServiceRequestID(changed)
	require.Equal(t, []string{goneSR}, walkIDs(t, e.base+"/ServiceRequest?_id="+goneSR))

	e.sim.SetStatus(domain, gone, "AUTHORISED")
	assert.Equal(t, http.StatusNotFound, get(t, e.base+"/ServiceRequest/"+goneSR).status)
	assert.Empty(t, walkIDs(t, e.base+"/ServiceRequest?_id="+goneSR), "dropped at once")

	a, _ := e.sim.Appointment(domain, changed)
	a.StudyDescription += " (amended)"
	e.sim.PutAppointment(a)
	since := time.Now().UTC().Format(time.RFC3339Nano)
	require.Equal(t, http.StatusOK, get(t, e.base+"/ServiceRequest/"+changedSR).status)
	assert.Equal(t, []string{changedSR}, walkIDs(t, e.base+"/ServiceRequest?_lastUpdated=gt"+url.QueryEscape(since)))

	evs, err := syncer.Store.(store.Events).EventsAfter(context.Background(), 0, 1000)
	require.NoError(t, err)
	last := evs[len(evs)-1]
	assert.Equal(t, store.EventChanged, last.Kind)
	assert.Equal(t, store.EventLeft, evs[len(evs)-2].Kind)
	assert.Equal(t, goneSR, evs[len(evs)-2].FocusID)
}

// TestIndexedWriteRefreshes: a comment on a study refreshes its row from
// the appointment the write read.
func TestIndexedWriteRefreshes(t *testing.T) {
	t.Parallel()
	e, _, domain := indexedEnv(t, 30)
	id := e.sim.PendingIDs(domain)[2]
	sr, _ := mapping.ServiceRequestID(id)
	a, _ := e.sim.Appointment(domain, id)
	a.Modality = "NM"
	e.sim.PutAppointment(a)
	assert.NotContains(t, walkIDs(t, e.base+"/ServiceRequest?modality=NM"), sr)
	comment, _ := json.Marshal(map[string]any{
		"resourceType": "Communication", "status": "completed",
		"basedOn": []any{map[string]any{"reference": "ServiceRequest/" + sr}},
		"payload": []any{map[string]any{"contentString": "Seen. " + phiMarker}},
	})
	require.Equal(t, http.StatusCreated, post(t, e.base+"/Communication", comment, nil).status)
	assert.Contains(t, walkIDs(t, e.base+"/ServiceRequest?modality=NM"), sr)
}

// TestIndexedSearchParameters checks each parameter, its OR and AND
// forms, the sorts and paging against what the mapped ServiceRequests
// say, evaluated here on the samply models.
func TestIndexedSearchParameters(t *testing.T) {
	t.Parallel()
	e, _, domain := indexedEnv(t, 300)
	ws := pendingSRs(t, e, domain)
	require.NotEmpty(t, ws)
	calls := len(e.sim.Requests())

	prio := func(w *mapping.Worklist) string {
		if p := w.ServiceRequest.Priority; p != nil {
			return p.Code()
		}
		return ""
	}
	modality := func(w *mapping.Worklist) string {
		for _, od := range w.ServiceRequest.OrderDetail {
			for _, c := range od.Coding {
				return *c.Code
			}
		}
		return ""
	}
	performer := func(w *mapping.Worklist) string {
		if len(w.ServiceRequest.Performer) > 0 {
			return *w.ServiceRequest.Performer[0].Reference
		}
		return ""
	}
	requester := func(w *mapping.Worklist) string {
		if r := w.ServiceRequest.Requester; r != nil {
			return *r.Reference
		}
		return ""
	}
	subject := func(w *mapping.Worklist) string { return strOf(w.ServiceRequest.Subject.Reference) }
	var aPerformer, aRequester, aPatient, aUID, aCode string
	var aCodeSystem string
	for _, w := range ws {
		if aPerformer == "" && performer(w) != "" {
			aPerformer = performer(w)
		}
		if aRequester == "" && strings.HasPrefix(requester(w), "Practitioner/") {
			aRequester = requester(w)
		}
		if aPatient == "" && subject(w) != "" {
			aPatient = subject(w)
		}
		for _, id := range w.ServiceRequest.Identifier {
			if aUID == "" && strOf(id.System) == mapping.SystemDICOMUID {
				aUID = *id.Value
			}
		}
		if w.ServiceRequest.Code != nil && len(w.ServiceRequest.Code.Coding) > 0 && aCode == "" {
			aCode, aCodeSystem = *w.ServiceRequest.Code.Coding[0].Code, *w.ServiceRequest.Code.Coding[0].System
		}
	}
	require.NotEmpty(t, aPerformer)
	require.NotEmpty(t, aRequester)
	require.NotEmpty(t, aUID)
	require.NotEmpty(t, aCode)
	hasCode := func(w *mapping.Worklist, code string) bool {
		if w.ServiceRequest.Code == nil {
			return false
		}
		return slices.ContainsFunc(w.ServiceRequest.Code.Coding, func(c models.Coding) bool { return strOf(c.Code) == code && strOf(c.System) == aCodeSystem })
	}
	hasID := func(w *mapping.Worklist, sys, v string) bool {
		return slices.ContainsFunc(w.ServiceRequest.Identifier, func(id models.Identifier) bool { return strOf(id.System) == sys && strOf(id.Value) == v })
	}
	firstID := *ws[0].ServiceRequest.Id
	for _, tc := range []struct {
		name, query string
		keep        func(*mapping.Worklist) bool
	}{
		{"priority", "priority=stat", func(w *mapping.Worklist) bool { return prio(w) == "stat" }},
		{"priority OR", "priority=stat,urgent", func(w *mapping.Worklist) bool { return prio(w) == "stat" || prio(w) == "urgent" }},
		{"priority system", "priority=http://hl7.org/fhir/request-priority|routine", func(w *mapping.Worklist) bool { return prio(w) == "routine" }},
		{"priority other system", "priority=http://example.org|routine", func(*mapping.Worklist) bool { return false }},
		{"modality", "modality=CT", func(w *mapping.Worklist) bool { return modality(w) == "CT" }},
		{"modality OR", "modality=CT,MR", func(w *mapping.Worklist) bool { return modality(w) == "CT" || modality(w) == "MR" }},
		{"modality DCM", "modality=" + url.QueryEscape(mapping.SystemDICOM+"|MR"), func(w *mapping.Worklist) bool { return modality(w) == "MR" }},
		{"modality AND", "modality=CT&modality=MR", func(*mapping.Worklist) bool { return false }},
		{"AND of two", "modality=CT&priority=routine", func(w *mapping.Worklist) bool { return modality(w) == "CT" && prio(w) == "routine" }},
		{"performer missing", "performer:missing=true", func(w *mapping.Worklist) bool { return performer(w) == "" }},
		{"performer present", "performer:missing=false", func(w *mapping.Worklist) bool { return performer(w) != "" }},
		{"performer", "performer=" + aPerformer, func(w *mapping.Worklist) bool { return performer(w) == aPerformer }},
		{"performer OR missing", "performer=" + aPerformer + "&performer:missing=false", func(w *mapping.Worklist) bool { return performer(w) == aPerformer }},
		{"requester", "requester=" + aRequester, func(w *mapping.Worklist) bool { return requester(w) == aRequester }},
		{"requester bare id", "requester=" + strings.TrimPrefix(aRequester, "Practitioner/"), func(w *mapping.Worklist) bool { return requester(w) == aRequester }},
		{"code", "code=" + url.QueryEscape(aCodeSystem+"|"+aCode), func(w *mapping.Worklist) bool { return hasCode(w, aCode) }},
		{"identifier UID", "identifier=" + url.QueryEscape(mapping.SystemDICOMUID+"|"+aUID), func(w *mapping.Worklist) bool { return hasID(w, mapping.SystemDICOMUID, aUID) }},
		{"patient", "patient=" + aPatient, func(w *mapping.Worklist) bool { return subject(w) == aPatient }},
		{"subject bare", "subject=" + strings.TrimPrefix(aPatient, "Patient/"), func(w *mapping.Worklist) bool { return subject(w) == aPatient }},
		{"status", "status=active", func(w *mapping.Worklist) bool { return w.ServiceRequest.Status.Code() == "active" }},
		{"status none", "status=completed", func(*mapping.Worklist) bool { return false }},
		{"_id", "_id=" + firstID, func(w *mapping.Worklist) bool { return *w.ServiceRequest.Id == firstID }},
		{"_lastUpdated future", "_lastUpdated=gt2999-01-01", func(*mapping.Worklist) bool { return false }},
		{"_lastUpdated past", "_lastUpdated=ge2020-01-01", func(*mapping.Worklist) bool { return true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := srIDs(ws, tc.keep)
			assert.Equal(t, want, sorted(walkIDs(t, e.base+"/ServiceRequest?_count=500&"+tc.query)), tc.query)
		})
	}

	t.Run("occurrence", func(t *testing.T) {
		syd, _ := time.LoadLocation("Australia/Sydney")
		siteZones := e.sim.SiteTimeZones()
		// A date without a time is the day at each study's own site.
		zoneOf := func(w *mapping.Worklist) *time.Location {
			if len(w.ServiceRequest.LocationCode) > 0 {
				if z, ok := siteZones[strOf(w.ServiceRequest.LocationCode[0].Text)]; ok {
					loc, _ := time.LoadLocation(z)
					return loc
				}
			}
			return syd
		}
		var day string
		for _, w := range ws {
			if p := w.ServiceRequest.OccurrencePeriod; p != nil && p.Start != nil {
				day = (*p.Start)[:len(time.DateOnly)]
				break
			}
		}
		require.NotEmpty(t, day)
		dayOf := func(w *mapping.Worklist) (lo, hi time.Time) {
			lo, _ = time.ParseInLocation(time.DateOnly, day, zoneOf(w))
			return lo, lo.AddDate(0, 0, 1)
		}
		rng := func(w *mapping.Worklist) (s, e time.Time, ok bool) {
			sr := w.ServiceRequest
			switch {
			case sr.OccurrencePeriod != nil && sr.OccurrencePeriod.Start != nil:
				s, _ = time.Parse(time.RFC3339, *sr.OccurrencePeriod.Start)
				e = s.Add(time.Second)
				if sr.OccurrencePeriod.End != nil {
					e, _ = time.Parse(time.RFC3339, *sr.OccurrencePeriod.End)
					e = e.Add(time.Second)
				}
				return s, e, true
			case sr.OccurrenceDateTime != nil:
				// A date alone is the whole day at the study's site.
				s, _ = time.ParseInLocation(time.DateOnly, *sr.OccurrenceDateTime, zoneOf(w))
				return s, s.AddDate(0, 0, 1), true
			}
			return s, e, false
		}
		within := func(w *mapping.Worklist) bool {
			s, e, ok := rng(w)
			lo, hi := dayOf(w)
			return ok && !s.Before(lo) && !e.After(hi)
		}
		assert.Equal(t, srIDs(ws, within), sorted(walkIDs(t, e.base+"/ServiceRequest?_count=500&occurrence="+day)))
		assert.Equal(t, srIDs(ws, func(w *mapping.Worklist) bool { s, _, ok := rng(w); lo, _ := dayOf(w); return ok && s.Before(lo) }),
			sorted(walkIDs(t, e.base+"/ServiceRequest?_count=500&occurrence=lt"+day)))
		assert.Equal(t, srIDs(ws, func(w *mapping.Worklist) bool { s, _, ok := rng(w); _, hi := dayOf(w); return ok && !s.Before(hi) }),
			sorted(walkIDs(t, e.base+"/ServiceRequest?_count=500&occurrence=sa"+day)))
		assert.Equal(t, srIDs(ws, func(w *mapping.Worklist) bool {
			_, e, ok := rng(w)
			_, hi := dayOf(w)
			return ok && (e.After(hi) || within(w))
		}),
			sorted(walkIDs(t, e.base+"/ServiceRequest?_count=500&occurrence=ge"+day)))
	})

	t.Run("sorts", func(t *testing.T) {
		rank := map[string]int{"stat": 1, "asap": 2, "urgent": 3, "routine": 4, "": 9}
		r := get(t, e.base+"/ServiceRequest?_count=500&_sort=priority,-occurrence")
		var prev int
		var prevStart string
		for i, en := range entries(r.json(t), "match") {
			sr := resourceOf(en)
			p, _ := sr["priority"].(string)
			start := ""
			if op, ok := sr["occurrencePeriod"].(map[string]any); ok {
				start, _ = op["start"].(string)
			}
			if i > 0 {
				require.LessOrEqual(t, prev, rank[p], "clinical urgency, not alphabet")
				if prev == rank[p] && start != "" && prevStart != "" {
					a, _ := time.Parse(time.RFC3339, prevStart)
					b, _ := time.Parse(time.RFC3339, start)
					require.False(t, b.After(a), "then latest first")
				}
			}
			prev, prevStart = rank[p], start
		}
		// Paging over a sort gives what one page gives.
		one := walkIDs(t, e.base+"/ServiceRequest?_count=500&_sort=report-needed-by,-_lastUpdated")
		paged := walkIDs(t, e.base+"/ServiceRequest?_count=7&_sort=report-needed-by,-_lastUpdated")
		assert.Equal(t, one, paged)
		assert.Len(t, one, len(ws))
	})

	t.Run("includes", func(t *testing.T) {
		r := get(t, e.base+"/ServiceRequest?_count=10&_include=ServiceRequest:subject&_include=ServiceRequest:performer&_revinclude=Task:focus&_revinclude=DiagnosticReport:based-on")
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		types := map[string]int{}
		for _, en := range entries(r.json(t), "include") {
			types[resourceOf(en)["resourceType"].(string)]++
		}
		assert.Positive(t, types["Patient"])
		assert.Equal(t, 10, types["Task"])
	})

	t.Run("errors", func(t *testing.T) {
		for _, q := range []string{"_sort=name", "occurrence=yesterday", "performer:missing=maybe", "_id=" + url.QueryEscape("bad id"), "_count=0", "_cursor=forged"} {
			r := get(t, e.base+"/ServiceRequest?"+q)
			assert.Equal(t, http.StatusBadRequest, r.status, "%s: %s", q, r.body)
			outcome(t, r)
		}
		strict := do(t, http.MethodGet, e.base+"/ServiceRequest?site=x", http.Header{"Prefer": {"handling=strict"}}, nil)
		assert.Equal(t, http.StatusBadRequest, strict.status)
	})
	assert.Equal(t, calls, len(e.sim.Requests()), "no search called QUBS")

	t.Run("capability", func(t *testing.T) {
		cs := get(t, e.base+"/metadata").json(t)
		params := map[string]string{}
		for _, res := range cs["rest"].([]any)[0].(map[string]any)["resource"].([]any) {
			rm := res.(map[string]any)
			if rm["type"] != "ServiceRequest" {
				continue
			}
			for _, p := range rm["searchParam"].([]any) {
				pm := p.(map[string]any)
				d, _ := pm["definition"].(string)
				params[pm["name"].(string)] = d
			}
			assert.Contains(t, rm["searchRevInclude"], "DiagnosticReport:based-on")
		}
		assert.Equal(t, server.ModalityDefinition, params["modality"])
		for _, n := range []string{"priority", "performer", "requester", "code", "occurrence", "_lastUpdated", "_sort", "_total"} {
			assert.Contains(t, params, n)
		}
	})
}

// TestIndexOffKeepsPassThrough: without the index, the new parameters are
// what they were: unknown (ignored, or 400 with handling=strict).
func TestIndexOffKeepsPassThrough(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	cs := get(t, e.base+"/metadata")
	assert.NotContains(t, string(cs.body), server.ModalityDefinition)
	r := get(t, e.base+"/ServiceRequest?priority=stat&_count=2")
	require.Equal(t, http.StatusOK, r.status)
	assert.Contains(t, outcomeEntries(r), "priority")
	strict := do(t, http.MethodGet, e.base+"/ServiceRequest?priority=stat", http.Header{"Prefer": {"handling=strict"}}, nil)
	assert.Equal(t, http.StatusBadRequest, strict.status)
}

func outcomeEntries(r *response) string { return string(r.body) }

// TestModalitySearchParameter: the definition the CapabilityStatement
// names is valid R4 and has the same canonical URL.
func TestModalitySearchParameter(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/SearchParameter-ServiceRequest-modality.json")
	require.NoError(t, err)
	fhirtest.RequireValidR4(t, b)
	var sp struct{ URL, Code, Type string }
	require.NoError(t, json.Unmarshal(b, &sp))
	assert.Equal(t, server.ModalityDefinition, sp.URL)
	assert.Equal(t, "modality", sp.Code)
	assert.Equal(t, "token", sp.Type)
}

func strOf(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// TestIndexedSearchBeforeFirstWalk: a domain whose first walk has not
// finished answers 503 (try again), not an empty worklist.
func TestIndexedSearchBeforeFirstWalk(t *testing.T) {
	t.Parallel()
	var syncer *worklist.Syncer
	e := newEnv(t, func(so *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		so.Appointments = 10
		sc.RequestTimeout = 300 * time.Millisecond
	}, withIndex(t, &syncer))
	r := get(t, e.base+"/ServiceRequest")
	assert.Equal(t, http.StatusServiceUnavailable, r.status, "%s", r.body)
	assert.Contains(t, outcome(t, r), "being built")
}
