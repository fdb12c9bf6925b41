package server_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/worklist"
)

// indexedStudy is a pending appointment of the simulator as the bridge
// maps it.
type indexedStudy struct {
	a qubs.Appointment
	m mapping.Mapped
}

func indexedStudies(t *testing.T, e *env, s *worklist.Syncer, domain string) []indexedStudy {
	t.Helper()
	var out []indexedStudy
	for _, id := range e.sim.PendingIDs(domain) {
		a, _ := e.sim.Appointment(domain, id)
		m, err := mapping.Map(&a, s.Zones)
		if err != nil {
			continue
		}
		out = append(out, indexedStudy{a: a, m: m})
	}
	return out
}

func studyIDs(ss []indexedStudy, keep func(*indexedStudy) bool) []string {
	out := []string{}
	for i := range ss {
		if keep(&ss[i]) {
			out = append(out, ss[i].m.ID)
		}
	}
	slices.Sort(out)
	return out
}

// rawMatches returns the match resources of a searchset as the bridge
// wrote them, by id.
func rawMatches(t *testing.T, r *response) map[string][]byte {
	t.Helper()
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var b struct {
		Entry []struct {
			Resource json.RawMessage
			Search   struct{ Mode string }
		}
	}
	require.NoError(t, json.Unmarshal(r.body, &b))
	out := map[string][]byte{}
	for _, e := range b.Entry {
		if e.Search.Mode == "match" {
			var id struct{ ID string }
			require.NoError(t, json.Unmarshal(e.Resource, &id))
			out[id.ID] = e.Resource
		}
	}
	return out
}

// startedRange is ImagingStudy.started as the range FHIR date search
// compares: a dateTime its second, a date the site's day.
func startedRange(m *mapping.Mapped) (lo, hi time.Time, ok bool) {
	lo, hi, ok = m.Started()
	if ok && lo.Equal(hi) {
		hi = lo.Add(time.Second)
	}
	return lo, hi, ok
}

// TestIndexedStudyViews: with the index on, ImagingStudy and Task searches
// answer from it on both stores, each parameter in its AND and OR forms,
// paged, without a QUBS call, and write each resource byte for byte as a
// read of it does.
func TestIndexedStudyViews(t *testing.T) {
	for name, opt := range map[string]func(testing.TB) envOption{"sqlite": withStore, "postgres": withPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e, syncer, domain := indexedEnvOn(t, opt, 300)
			ss := indexedStudies(t, e, syncer, domain)
			require.NotEmpty(t, ss)
			var one *indexedStudy
			for i := range ss {
				if s := &ss[i]; s.a.StudyInstanceUID != "" && s.m.RadiologistID != "" && s.m.PatientID != "" {
					if _, ok := s.m.Modality(); ok {
						one = s
						break
					}
				}
			}
			require.NotNil(t, one)
			other := ss[len(ss)-1]
			uid, owner, patient := one.a.StudyInstanceUID, one.m.RadiologistID, one.m.PatientID
			mod, _ := one.m.Modality()
			prio := func(s *indexedStudy) string { p, _ := s.m.Priority(); return p }
			modality := func(s *indexedStudy) string { c, _ := s.m.Modality(); return c }
			syd, _ := time.LoadLocation("Australia/Sydney")
			day := func(s *indexedStudy) time.Time {
				lo, _, _ := s.m.Started()
				y, mo, d := lo.In(syd).Date()
				return time.Date(y, mo, d, 0, 0, 0, 0, syd)
			}
			d0 := day(one)
			d1 := d0.AddDate(0, 0, 1)
			dayParam := d0.Format(time.DateOnly)
			calls := len(e.sim.Requests())

			for _, tc := range []struct {
				name, query string
				keep        func(*indexedStudy) bool
			}{
				{"identifier UID", query("identifier", mapping.SystemDICOMUID+"|urn:oid:"+uid), func(s *indexedStudy) bool { return s.a.StudyInstanceUID == uid }},
				{"identifier UID as DICOM spells it", query("identifier", mapping.SystemDICOMUID+"|"+uid), func(s *indexedStudy) bool { return s.a.StudyInstanceUID == uid }},
				{"identifier OR", query("identifier", mapping.SystemDICOMUID+"|urn:oid:"+uid+","+mapping.SystemAppointmentID+"|"+other.a.AppointmentID),
					func(s *indexedStudy) bool { return s.a.StudyInstanceUID == uid || s.m.ID == other.m.ID }},
				{"identifier AND", query("identifier", "urn:oid:"+uid, "identifier", other.a.AppointmentID), func(s *indexedStudy) bool { return false }},
				{"patient", query("patient", "Patient/"+patient), func(s *indexedStudy) bool { return s.m.PatientID == patient }},
				{"subject bare", query("subject", patient), func(s *indexedStudy) bool { return s.m.PatientID == patient }},
				{"basedon OR", query("basedon", "ServiceRequest/"+one.m.ID+",ServiceRequest/"+other.m.ID), func(s *indexedStudy) bool { return s == one || s.m.ID == other.m.ID }},
				{"basedon AND modality", query("basedon", "ServiceRequest/"+one.m.ID, "modality", mod), func(s *indexedStudy) bool { return s == one }},
				{"modality OR", query("modality", mapping.SystemDICOM+"|CT,MR"), func(s *indexedStudy) bool { return modality(s) == "CT" || modality(s) == "MR" }},
				{"modality AND", query("modality", "CT", "modality", "MR"), func(*indexedStudy) bool { return false }},
				{"modality other system", query("modality", "http://loinc.org|CT"), func(*indexedStudy) bool { return false }},
				{"_id OR", query("_id", one.m.ID+","+other.m.ID), func(s *indexedStudy) bool { return s == one || s.m.ID == other.m.ID }},
				{"started day", query("started", dayParam), func(s *indexedStudy) bool {
					lo, hi, ok := startedRange(&s.m)
					return ok && !lo.Before(d0) && !hi.After(d1)
				}},
				{"started range AND", query("started", "ge"+dayParam, "started", "lt"+d1.AddDate(0, 0, 7).Format(time.DateOnly)), func(s *indexedStudy) bool {
					lo, hi, ok := startedRange(&s.m)
					// ge: after the day, or within it (R4 search.html#prefix).
					return ok && (hi.After(d1) || (!lo.Before(d0) && !hi.After(d1))) && lo.Before(d1.AddDate(0, 0, 7))
				}},
				{"started OR", query("started", "lt"+dayParam+",sa"+dayParam), func(s *indexedStudy) bool {
					lo, _, ok := startedRange(&s.m)
					return ok && (lo.Before(d0) || !lo.Before(d1))
				}},
			} {
				t.Run("ImagingStudy "+tc.name, func(t *testing.T) {
					want := studyIDs(ss, tc.keep)
					assert.Equal(t, want, ids(walkResources(t, e.base+"/ImagingStudy?_count=500&"+tc.query)), tc.query)
				})
			}
			for _, tc := range []struct {
				name, query string
				keep        func(*indexedStudy) bool
			}{
				{"owner", query("owner", "Practitioner/"+owner), func(s *indexedStudy) bool { return s.m.RadiologistID == owner }},
				{"owner AND priority OR", query("owner", "Practitioner/"+owner, "priority", "stat,urgent"), func(s *indexedStudy) bool {
					return s.m.RadiologistID == owner && (prio(s) == "stat" || prio(s) == "urgent")
				}},
				{"priority system", query("priority", "http://hl7.org/fhir/request-priority|routine"), func(s *indexedStudy) bool { return prio(s) == "routine" }},
				{"priority AND", query("priority", "stat", "priority", "routine"), func(*indexedStudy) bool { return false }},
				{"focus", query("focus", "ServiceRequest/"+one.m.ID), func(s *indexedStudy) bool { return s == one }},
				{"patient", query("patient", "Patient/"+patient), func(s *indexedStudy) bool { return s.m.PatientID == patient }},
				{"status requested", query("status", "http://hl7.org/fhir/task-status|requested"), func(*indexedStudy) bool { return true }},
				{"status OR", query("status", "completed,in-progress"), func(*indexedStudy) bool { return false }},
				{"_lastUpdated", query("_lastUpdated", "ge2020-01-01", "_lastUpdated", "lt2999-01-01"), func(*indexedStudy) bool { return true }},
				{"_lastUpdated future", query("_lastUpdated", "gt2999-01-01"), func(*indexedStudy) bool { return false }},
				{"_id", query("_id", other.m.ID), func(s *indexedStudy) bool { return s.m.ID == other.m.ID }},
			} {
				t.Run("Task "+tc.name, func(t *testing.T) {
					want := studyIDs(ss, tc.keep)
					assert.Equal(t, want, ids(walkResources(t, e.base+"/Task?_count=500&"+tc.query)), tc.query)
				})
			}

			t.Run("paging and totals", func(t *testing.T) {
				for _, typ := range []string{"ImagingStudy", "Task"} {
					all := walkIDs(t, e.base+"/"+typ+"?_count=500")
					require.Len(t, all, len(ss))
					assert.True(t, slices.IsSorted(all), "id order")
					assert.Equal(t, all, walkIDs(t, e.base+"/"+typ+"?_count=7"), "pages give what one page gives")
					b := get(t, e.base+"/"+typ+"?_total=accurate&_count=3").json(t)
					assert.EqualValues(t, len(ss), b["total"])
					meta := b["meta"].(map[string]any)
					assert.NotEmpty(t, meta["lastUpdated"], "as fresh as the index")
					assert.Equal(t, server.ExtIndexAsOf, meta["extension"].([]any)[0].(map[string]any)["url"])
					b = get(t, e.base+"/"+typ+"?_summary=count&"+query("modality", mod)).json(t)
					if typ == "ImagingStudy" {
						assert.EqualValues(t, len(studyIDs(ss, func(s *indexedStudy) bool { return modality(s) == mod })), b["total"])
					}
					assert.Empty(t, entries(b, "match"))
				}
			})

			t.Run("includes", func(t *testing.T) {
				r := get(t, e.base+"/ImagingStudy?"+query("_id", one.m.ID, "_include", "ImagingStudy:patient")+"&_include=ImagingStudy:basedon")
				var inc []string
				for _, en := range entries(r.json(t), "include") {
					inc = append(inc, resourceOf(en)["resourceType"].(string)+"/"+resourceOf(en)["id"].(string))
				}
				assert.ElementsMatch(t, []string{"ServiceRequest/" + one.m.ID, "Patient/" + patient}, inc)
				r = get(t, e.base+"/Task?"+query("_id", one.m.ID, "_include", "Task:owner")+"&_include=Task:focus&_include=Task:patient")
				inc = nil
				for _, en := range entries(r.json(t), "include") {
					inc = append(inc, resourceOf(en)["resourceType"].(string)+"/"+resourceOf(en)["id"].(string))
				}
				assert.ElementsMatch(t, []string{"ServiceRequest/" + one.m.ID, "Patient/" + patient, "Practitioner/" + owner}, inc)
			})

			t.Run("bad input is a 400 OperationOutcome", func(t *testing.T) {
				for _, q := range []string{"ImagingStudy?started=yesterday", "ImagingStudy?patient=Practitioner/x", "ImagingStudy?basedon=Patient/x",
					"ImagingStudy?" + query("_id", "bad id"), "Task?owner=Patient/x", "Task?_lastUpdated=soon", "Task?_cursor=forged", "Task?_count=0"} {
					r := get(t, e.base+"/"+q)
					assert.Equal(t, http.StatusBadRequest, r.status, "%s: %s", q, r.body)
					outcome(t, r)
				}
			})
			assert.Equal(t, calls, len(e.sim.Requests()), "no search called QUBS")

			t.Run("as a read writes it", func(t *testing.T) {
				for _, s := range []*indexedStudy{one, &other, &ss[len(ss)/2]} {
					is := rawMatches(t, get(t, e.base+"/ImagingStudy?_id="+s.m.ID))[s.m.ID]
					read := get(t, e.base+"/ImagingStudy/"+s.m.ID)
					require.Equal(t, http.StatusOK, read.status)
					assert.Equal(t, string(read.body), string(is), "ImagingStudy/%s", s.m.ID)

					// A requested Task read has no lastUpdated; from the
					// index it is the row's, the ServiceRequest's.
					task := string(rawMatches(t, get(t, e.base+"/Task?_id="+s.m.ID))[s.m.ID])
					sr := resourceOf(entries(get(t, e.base+"/ServiceRequest?_id="+s.m.ID).json(t), "match")[0])
					at, err := time.Parse(time.RFC3339Nano, sr["meta"].(map[string]any)["lastUpdated"].(string))
					require.NoError(t, err)
					stamp := at.UTC().Format(time.RFC3339Nano)
					assert.Contains(t, task, `"meta":{"lastUpdated":"`+stamp+`"}`)
					assert.Contains(t, task, `"lastModified":"`+stamp+`"`)
					task = strings.Replace(task, `,"meta":{"lastUpdated":"`+stamp+`"}`, "", 1)
					task = strings.Replace(task, `,"lastModified":"`+stamp+`"`, "", 1)
					read = get(t, e.base+"/Task/"+s.m.ID)
					require.Equal(t, http.StatusOK, read.status)
					assert.Equal(t, string(read.body), task, "Task/%s", s.m.ID)
				}
			})

			t.Run("a study that left QUBS drops out", func(t *testing.T) {
				require.True(t, e.sim.SetStatus(domain, other.a.AppointmentID, qubs.StatusAuthorised))
				syncIndex(t, syncer, domain)
				assert.Empty(t, walkIDs(t, e.base+"/ImagingStudy?_id="+other.m.ID))
				assert.Empty(t, walkIDs(t, e.base+"/Task?_id="+other.m.ID))
				// Between walks, a read that finds it gone drops it at once.
				require.True(t, e.sim.SetStatus(domain, one.a.AppointmentID, qubs.StatusAuthorised))
				assert.Equal(t, []string{one.m.ID}, walkIDs(t, e.base+"/Task?_id="+one.m.ID), "the index has not seen it leave")
				assert.Equal(t, http.StatusNotFound, get(t, e.base+"/ImagingStudy/"+one.m.ID).status)
				assert.Empty(t, walkIDs(t, e.base+"/Task?_id="+one.m.ID))
			})
		})
	}
}

// TestIndexedTaskStatus: a Task served from the index is in-progress once
// a preliminary report was delivered and completed once a final was, its
// lastUpdated then the delivery's, as a read says it, and found by status
// and _lastUpdated without a walk in between.
func TestIndexedTaskStatus(t *testing.T) {
	for name, opt := range map[string]func(testing.TB) envOption{"sqlite": withStore, "postgres": withPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e, _, _ := indexedEnvOn(t, opt, 40)
			_, id := withUID(t, e.sim)
			before := time.Now().UTC().Format(time.RFC3339Nano)
			status := func(code string) []string { return walkIDs(t, e.base+"/Task?_count=500&status="+code) }
			assert.NotContains(t, status("in-progress"), id)

			r := post(t, e.base+"/DiagnosticReport", report{srID: id, status: "preliminary", text: "Preliminary."}.json(), nil)
			require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
			dr := r.json(t)
			eventually(t, "the Task in progress", func() bool { return slices.Equal(status("in-progress"), []string{id}) })
			assert.NotContains(t, status("requested"), id)
			assert.Equal(t, []string{id}, walkIDs(t, e.base+"/Task?"+query("_lastUpdated", "gt"+before)), "changed since")

			r = put(t, e.base+"/DiagnosticReport/"+dr["id"].(string), report{srID: id, status: "final", text: "Final.", id: dr["id"].(string)}.json(), nil)
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			eventually(t, "the Task completed", func() bool { return slices.Equal(status("completed"), []string{id}) })
			assert.Empty(t, status("in-progress"))
			assert.Equal(t, []string{id}, walkIDs(t, e.base+"/Task?"+query("status", "completed", "_lastUpdated", "gt"+before)))

			task := rawMatches(t, get(t, e.base+"/Task?"+query("focus", "ServiceRequest/"+id)))[id]
			read := get(t, e.base+"/Task/"+id)
			require.Equal(t, http.StatusOK, read.status)
			assert.Equal(t, string(read.body), string(task), "the delivery is later than the row: the same Task")
			var parsed struct{ Meta struct{ LastUpdated string } }
			require.NoError(t, json.Unmarshal(task, &parsed))
			assert.Equal(t, []string{id}, walkIDs(t, e.base+"/Task?"+query("_lastUpdated", parsed.Meta.LastUpdated)), "its lastUpdated is what _lastUpdated searches")
		})
	}
}

// TestStudyViewsIndexOff: without the index, ImagingStudy and Task keep
// the walk of QUBS and its parameters.
func TestStudyViewsIndexOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	cs := string(get(t, e.base+"/metadata").body)
	assert.NotContains(t, cs, "ImagingStudy-subject")
	// started takes alternatives and every prefix, as from the index
	// (TestDateSearchSiteLocalDays compares the answers).
	r := get(t, e.base+"/ImagingStudy?"+query("started", "ge2025,ne2026"))
	assert.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r = do(t, http.MethodGet, e.base+"/Task?_total=accurate", http.Header{"Prefer": {"handling=strict"}}, nil)
	assert.Equal(t, http.StatusBadRequest, r.status, "no totals on the walk")
}

// TestStudyViewsCapability: the CapabilityStatement lists what the
// indexed ImagingStudy and Task searches take.
func TestStudyViewsCapability(t *testing.T) {
	t.Parallel()
	e, _, _ := indexedEnv(t, 5)
	cs := get(t, e.base+"/metadata").json(t)
	params := map[string][]string{}
	for _, res := range cs["rest"].([]any)[0].(map[string]any)["resource"].([]any) {
		rm := res.(map[string]any)
		sp, _ := rm["searchParam"].([]any)
		for _, p := range sp {
			params[rm["type"].(string)] = append(params[rm["type"].(string)], p.(map[string]any)["name"].(string))
		}
	}
	assert.ElementsMatch(t, []string{"_id", "identifier", "patient", "subject", "basedon", "modality", "started", "_total", "_summary", "_cursor"}, params["ImagingStudy"])
	assert.ElementsMatch(t, []string{"_id", "owner", "status", "priority", "focus", "patient", "_lastUpdated", "_total", "_summary", "_cursor"}, params["Task"])
}
