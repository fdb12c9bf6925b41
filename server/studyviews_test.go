package server_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// walkResources follows next links and returns the matches of every page.
func walkResources(t *testing.T, first string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for next, pages := first, 0; next != ""; pages++ {
		require.Less(t, pages, 500, "runaway paging")
		r := get(t, next)
		require.Equal(t, http.StatusOK, r.status, "%s: %s", next, r.body)
		b := r.json(t)
		for _, e := range entries(b, "match") {
			out = append(out, resourceOf(e))
		}
		next = link(b, "next")
	}
	return out
}

// pendingWhere returns the ServiceRequest ids of the domain's pending
// appointments for which keep holds, sorted.
func pendingWhere(t *testing.T, sim *qubssim.Server, keep func(a *qubs.Appointment) bool) []string {
	t.Helper()
	var want []string
	for _, id := range sim.PendingIDs("acme") {
		a, ok := sim.Appointment("acme", id)
		require.True(t, ok)
		if keep(&a) {
			sr, err := mapping.ServiceRequestID(id)
			require.NoError(t, err)
			want = append(want, sr)
		}
	}
	slices.Sort(want)
	return want
}

func ids(resources []map[string]any) []string {
	out := make([]string, 0, len(resources))
	for _, r := range resources {
		out = append(out, r["id"].(string))
	}
	slices.Sort(out)
	return out
}

// withUID returns a pending appointment that has a Study Instance UID,
// a radiologist and a start time.
func withUID(t *testing.T, sim *qubssim.Server) (qubs.Appointment, string) {
	t.Helper()
	for _, id := range sim.PendingIDs("acme") {
		a, _ := sim.Appointment("acme", id)
		if a.StudyInstanceUID != "" && a.RadiologistUser != nil && a.StartTime != nil && a.DoctorName != "" && a.PatientID != "" && a.Modality == "CT" {
			sr, err := mapping.ServiceRequestID(id)
			require.NoError(t, err)
			return a, sr
		}
	}
	t.Fatal("no suitable appointment in the seed")
	return qubs.Appointment{}, ""
}

func TestImagingStudyRead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, id := withUID(t, e.sim)

	r := get(t, e.base+"/ImagingStudy/"+id)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	is := r.json(t)
	assert.Equal(t, "ImagingStudy", is["resourceType"])
	assert.Equal(t, id, is["id"])
	assert.Equal(t, "available", is["status"])
	assert.Contains(t, string(r.body), `{"system":"urn:dicom:uid","value":"urn:oid:`+a.StudyInstanceUID+`"}`)
	assert.Contains(t, string(r.body), `"modality":[{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"CT"`)
	assert.Equal(t, "ServiceRequest/"+id, is["basedOn"].([]any)[0].(map[string]any)["reference"])
	assert.Equal(t, "Patient/"+a.PatientID, is["subject"].(map[string]any)["reference"])
	assert.Equal(t, a.StudyDescription, is["description"])
	assert.Equal(t, a.ScheduledSite, is["location"].(map[string]any)["display"])
	assert.True(t, strings.HasPrefix(is["started"].(string), *a.AppointmentDate+"T"+*a.StartTime))
	require.Len(t, is["interpreter"], 1)

	for _, bad := range []string{"does-not-exist", "b32-!!"} {
		r := get(t, e.base+"/ImagingStudy/"+bad)
		assert.Equal(t, http.StatusNotFound, r.status)
		assert.Equal(t, "OperationOutcome", r.json(t)["resourceType"])
	}
	// A study that left the worklist is gone.
	require.True(t, e.sim.SetStatus("acme", a.AppointmentID, qubs.StatusAuthorised))
	assert.Equal(t, http.StatusNotFound, get(t, e.base+"/ImagingStudy/"+id).status)
	assert.Equal(t, http.StatusNotFound, get(t, e.base+"/Task/"+id).status)
}

func TestImagingStudySearch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, id := withUID(t, e.sim)

	t.Run("identifier by Study Instance UID, as a PACS asks", func(t *testing.T) {
		got := walkResources(t, e.base+"/ImagingStudy?"+query("identifier", "urn:dicom:uid|urn:oid:"+a.StudyInstanceUID, "_count", "500"))
		assert.Equal(t, []string{id}, ids(got))
	})
	t.Run("identifier by appointment id is one QUBS read", func(t *testing.T) {
		before := len(e.sim.Requests())
		r := get(t, e.base+"/ImagingStudy?"+query("identifier", a.AppointmentID))
		require.Equal(t, http.StatusOK, r.status)
		assert.Equal(t, []string{id}, ids(resourcesOf(r.json(t))))
		assert.Equal(t, 1, len(e.sim.Requests())-before)
	})
	t.Run("basedon", func(t *testing.T) {
		r := get(t, e.base+"/ImagingStudy?"+query("basedon", "ServiceRequest/"+id))
		assert.Equal(t, []string{id}, ids(resourcesOf(r.json(t))))
		r = get(t, e.base+"/ImagingStudy?"+query("basedon", "ServiceRequest/"+id, "modality", "MR"))
		assert.Empty(t, resourcesOf(r.json(t)), "AND with another parameter")
	})
	t.Run("modality OR and AND", func(t *testing.T) {
		want := pendingWhere(t, e.sim, func(a *qubs.Appointment) bool { return a.Modality == "CT" || a.Modality == "MR" })
		got := walkResources(t, e.base+"/ImagingStudy?"+query("modality", "http://dicom.nema.org/resources/ontology/DCM|CT,MR", "_count", "200"))
		assert.Equal(t, want, ids(got))
		r := get(t, e.base+"/ImagingStudy?modality=CT&modality=MR")
		require.Equal(t, http.StatusOK, r.status)
		assert.Empty(t, resourcesOf(r.json(t)), "a study has one modality: CT AND MR is nothing")
		r = get(t, e.base+"/ImagingStudy?"+query("modality", "http://loinc.org|CT"))
		assert.Empty(t, resourcesOf(r.json(t)), "another system")
	})
	t.Run("patient", func(t *testing.T) {
		want := pendingWhere(t, e.sim, func(x *qubs.Appointment) bool { return x.PatientID == a.PatientID })
		got := walkResources(t, e.base+"/ImagingStudy?"+query("patient", "Patient/"+a.PatientID, "_count", "500"))
		assert.Equal(t, want, ids(got))
	})
	t.Run("started range", func(t *testing.T) {
		syd, _ := time.LoadLocation("Australia/Sydney")
		lo, hi := time.Date(2025, 6, 1, 0, 0, 0, 0, syd), time.Date(2025, 7, 1, 0, 0, 0, 0, syd)
		got := walkResources(t, e.base+"/ImagingStudy?"+query("started", "ge2025-06-01T00:00:00+10:00", "_count", "500")+"&"+query("started", "lt2025-07-01T00:00:00+10:00"))
		require.NotEmpty(t, got)
		for _, is := range got {
			s, ok := is["started"].(string)
			require.True(t, ok, "a study without started never matches")
			at, err := time.Parse(time.RFC3339, s)
			if err != nil { // a date alone: midnight in the site's zone
				at, err = time.ParseInLocation(time.DateOnly, s, syd)
				require.NoError(t, err)
			}
			assert.False(t, at.Before(lo.Add(-14*time.Hour)) || !at.Before(hi.Add(14*time.Hour)), "%s within range", s)
		}
	})
	t.Run("bad input is a 400 OperationOutcome", func(t *testing.T) {
		for _, q := range []string{"started=yesterday", "started=2025-02-30", "patient=Practitioner/x", "_id=a,b"} {
			r := get(t, e.base+"/ImagingStudy?"+q)
			assert.Equal(t, http.StatusBadRequest, r.status, q)
			assert.Equal(t, "OperationOutcome", r.json(t)["resourceType"], q)
		}
	})
	t.Run("include", func(t *testing.T) {
		r := get(t, e.base+"/ImagingStudy?"+query("_id", id, "_include", "ImagingStudy:basedon")+"&_include=ImagingStudy:patient")
		require.Equal(t, http.StatusOK, r.status)
		var inc []string
		for _, en := range entries(r.json(t), "include") {
			res := resourceOf(en)
			inc = append(inc, res["resourceType"].(string)+"/"+res["id"].(string))
		}
		assert.ElementsMatch(t, []string{"ServiceRequest/" + id, "Patient/" + a.PatientID}, inc)
	})
}

func resourcesOf(b map[string]any) []map[string]any {
	var out []map[string]any
	for _, e := range entries(b, "match") {
		out = append(out, resourceOf(e))
	}
	return out
}

func TestTaskSearchWithoutStore(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, id := withUID(t, e.sim)
	rad, err := mapping.Map(&a, nil)
	require.NoError(t, err)

	r := get(t, e.base+"/Task/"+id)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	task := r.json(t)
	assert.Equal(t, "requested", task["status"])
	assert.Equal(t, "order", task["intent"])
	assert.Equal(t, "ServiceRequest/"+id, task["focus"].(map[string]any)["reference"])
	assert.Equal(t, "Patient/"+a.PatientID, task["for"].(map[string]any)["reference"])
	assert.Equal(t, "Practitioner/"+rad.RadiologistID, task["owner"].(map[string]any)["reference"])
	assert.Nil(t, task["meta"], "nothing delivered: no lastUpdated")

	t.Run("owner and priority", func(t *testing.T) {
		want := pendingWhere(t, e.sim, func(x *qubs.Appointment) bool {
			return x.RadiologistUser != nil && x.RadiologistUser.Username == a.RadiologistUser.Username &&
				(strings.EqualFold(x.Priority, "stat") || strings.EqualFold(x.Priority, "urgent"))
		})
		require.NotEmpty(t, want)
		got := walkResources(t, e.base+"/Task?"+query("owner", "Practitioner/"+rad.RadiologistID, "priority", "stat,urgent", "_count", "100"))
		assert.Equal(t, want, ids(got))
	})
	t.Run("status", func(t *testing.T) {
		r := get(t, e.base+"/Task?status=completed&_count=50")
		require.Equal(t, http.StatusOK, r.status)
		assert.Empty(t, resourcesOf(r.json(t)))
		r = get(t, e.base+"/Task?"+query("focus", "ServiceRequest/"+id, "status", "requested"))
		assert.Equal(t, []string{id}, ids(resourcesOf(r.json(t))))
	})
	t.Run("includes", func(t *testing.T) {
		r := get(t, e.base+"/Task?"+query("focus", "ServiceRequest/"+id)+"&_include=Task:focus&_include=Task:patient&_include=Task:owner")
		require.Equal(t, http.StatusOK, r.status)
		var inc []string
		for _, en := range entries(r.json(t), "include") {
			res := resourceOf(en)
			inc = append(inc, res["resourceType"].(string)+"/"+res["id"].(string))
		}
		assert.ElementsMatch(t, []string{"ServiceRequest/" + id, "Patient/" + a.PatientID, "Practitioner/" + rad.RadiologistID}, inc)
	})
	t.Run("ServiceRequest revinclude Task:focus", func(t *testing.T) {
		r := get(t, e.base+"/ServiceRequest?"+query("_id", id, "_revinclude", "Task:focus"))
		require.Equal(t, http.StatusOK, r.status)
		inc := entries(r.json(t), "include")
		require.Len(t, inc, 1)
		assert.Equal(t, "Task", resourceOf(inc[0])["resourceType"])
		assert.Equal(t, id, resourceOf(inc[0])["id"])
		// Served revincludes are kept in the self link; others are not.
		r = get(t, e.base+"/ServiceRequest?"+query("_id", id, "_revinclude", "Task:focus")+"&_revinclude=Provenance:target")
		self, _ := url.Parse(link(r.json(t), "self"))
		assert.Equal(t, []string{"Task:focus"}, self.Query()["_revinclude"])
	})
}

// TestTaskFollowsDeliveredReports: a Task is requested, in-progress once
// a preliminary report reached QUBS, completed once a final did; the
// DiagnosticReport names the study's ImagingStudy, which resolves.
func TestTaskFollowsDeliveredReports(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		store func(testing.TB) envOption
	}{{"sqlite", withStore}, {"postgres", withPostgres}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tc.store(t))
			a, id := withUID(t, e.sim)
			before := time.Now().UTC().Add(-time.Second).Format(time.RFC3339)

			taskStatus := func() map[string]any {
				r := get(t, e.base+"/Task/"+id)
				require.Equal(t, http.StatusOK, r.status, "%s", r.body)
				return r.json(t)
			}
			assert.Equal(t, "requested", taskStatus()["status"])

			r := post(t, e.base+"/DiagnosticReport", report{srID: id, status: "preliminary", text: "Preliminary."}.json(), nil)
			require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
			dr := r.json(t)
			study := dr["imagingStudy"].([]any)[0].(map[string]any)["reference"].(string)
			assert.Equal(t, "ImagingStudy/"+id, study)
			assert.Equal(t, http.StatusOK, get(t, e.base+"/"+study).status, "the reference resolves")

			eventually(t, "the Task in progress", func() bool { return taskStatus()["status"] == "in-progress" })
			task := taskStatus()
			require.NotNil(t, task["meta"])
			assert.NotEmpty(t, task["meta"].(map[string]any)["lastUpdated"])
			assert.Len(t, e.sim.Reports("acme", a.AppointmentID), 1)

			got := walkResources(t, e.base+"/Task?"+query("_lastUpdated", "ge"+before, "_count", "500"))
			assert.Equal(t, []string{id}, ids(got), "changed since")
			got = walkResources(t, e.base+"/Task?"+query("status", "in-progress", "_count", "500"))
			assert.Equal(t, []string{id}, ids(got))

			r = put(t, e.base+"/DiagnosticReport/"+dr["id"].(string), report{srID: id, status: "final", text: "Final.", id: dr["id"].(string)}.json(), nil)
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			eventually(t, "the Task completed", func() bool { return taskStatus()["status"] == "completed" })

			r = get(t, e.base+"/ServiceRequest?"+query("_id", id, "_revinclude", "Task:focus"))
			inc := entries(r.json(t), "include")
			require.Len(t, inc, 1)
			assert.Equal(t, "completed", resourceOf(inc[0])["status"])
		})
	}
}

// A date without a time is a whole site-local day: a study dated with no
// start time matches a started range that overlaps that day, not only its
// midnight, and one given only an end time still has its date as started.
func TestImagingStudyStartedDayOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _ := withUID(t, e.sim)
	a.AppointmentID = "990000001"
	date, end := "2031-03-04", "10:00"
	a.AppointmentDate, a.StartTime, a.EndTime = &date, nil, &end
	e.sim.PutAppointment(a)
	id, err := mapping.ServiceRequestID(a.AppointmentID)
	require.NoError(t, err)

	r := get(t, e.base+"/ImagingStudy/"+id)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.Equal(t, date, r.json(t)["started"], "the date alone when QUBS gave only an end time")

	for _, c := range []struct {
		started string
		match   bool
	}{
		{"ge2031-03-04T12:00:00Z", true},       // noon UTC is within the day in every zone from -11 to +12
		{"lt2031-03-04T12:00:00Z", true},       // so is what comes before it
		{"2031-03-04", true},                   // the day itself
		{"lt2031-03-03T00:00:00+14:00", false}, // before the day starts anywhere
		{"ge2031-03-05T12:00:00+14:00", false}, // after it ends anywhere
	} {
		got := walkResources(t, e.base+"/ImagingStudy?"+query("_id", id, "started", c.started))
		if c.match {
			assert.Equal(t, []string{id}, ids(got), "started=%s", c.started)
		} else {
			assert.Empty(t, got, "started=%s", c.started)
		}
	}
}
