package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/delivery"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// TestSupersededVersionIsServed: a preliminary and a final stored before
// any delivery; the preliminary is never sent, and reading it says so.
func TestSupersededVersionIsServed(t *testing.T) {
	t.Parallel()
	var st store.Store
	e := newEnv(t, withStore(t), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		sc.Kick = func() {} // no worker: deliver by hand below
		st = sc.Store
	})
	appt, srID := firstPending(t, e.sim, 30)
	r := post(t, e.base+"/DiagnosticReport", report{srID: srID, status: "preliminary", text: "P " + phiMarker}.json(), nil)
	require.Equal(t, http.StatusCreated, r.status)
	id := r.json(t)["id"].(string)
	r = put(t, e.base+"/DiagnosticReport/"+id, report{srID: srID, status: "final", text: "F " + phiMarker, id: id}.json(), nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)

	client, err := qubs.New(qubs.Config{BaseURL: e.sim.URL, TokenURL: e.sim.TokenURL(), ClientID: qubssim.DefaultClientID, ClientSecret: qubssim.DefaultClientSecret})
	require.NoError(t, err)
	w := &delivery.Worker{Store: st, QUBS: client, Name: "w"}
	for {
		worked, err := w.DeliverOne(context.Background())
		require.NoError(t, err)
		if !worked {
			break
		}
	}
	reps := e.sim.Reports("acme", appt.AppointmentID)
	require.Len(t, reps, 1, "only the final is sent")
	assert.Equal(t, "final", reps[0].Status)
	r = get(t, e.base+"/DiagnosticReport/"+id+"/_history/1")
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.Contains(t, string(r.body), `"superseded"`)
}

func TestPurgedBinary(t *testing.T) {
	t.Parallel()
	var st store.Store
	e := newEnv(t, withStore(t), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) { st = sc.Store })
	_, srID := firstPending(t, e.sim, 31)
	bin, _ := json.Marshal(map[string]any{"resourceType": "Binary", "contentType": "application/pdf", "data": base64.StdEncoding.EncodeToString(pdf("purge me"))})
	r := post(t, e.base+"/Binary", bin, nil)
	require.Equal(t, http.StatusCreated, r.status)
	loc := r.header.Get("Location")
	_, err := st.PurgeBefore(context.Background(), time.Now().Add(time.Hour))
	require.NoError(t, err)

	assert.Equal(t, http.StatusGone, get(t, loc).status)
	assert.Equal(t, http.StatusGone, post(t, e.base+"/Binary", bin, nil).status, "the same file again")
	rep := report{srID: srID, status: "final", text: "x", extra: []map[string]any{{"contentType": "application/pdf", "url": loc}}}
	r = post(t, e.base+"/DiagnosticReport", rep.json(), nil)
	assert.Equal(t, http.StatusUnprocessableEntity, r.status, "a report cannot point at a purged file")
	outcome(t, r)
}

// TestLongAppointmentIDs: a study whose QUBS id cannot carry a record GUID
// in a FHIR id is still listed; its comments are left out with a warning,
// and a comment on it is refused before QUBS is called.
func TestLongAppointmentIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base, _ := e.sim.Appointment("acme", e.sim.PendingIDs("acme")[0])
	long := base
	long.AppointmentID = strings.Repeat("L", 40)
	e.sim.PutAppointment(long)
	e.sim.PutComment("acme", qubs.Comment{AppointmentID: long.AppointmentID, CommentType: qubs.CommentAppointment, CommentText: "on a long id " + phiMarker})
	tooLong := base
	tooLong.AppointmentID = strings.Repeat("X", 81)
	e.sim.PutAppointment(tooLong)

	ids, _ := walk(t, e.base+"/ServiceRequest?_count=500")
	assert.Contains(t, ids, long.AppointmentID)
	r := get(t, e.base+"/ServiceRequest?_count=500")
	require.Equal(t, http.StatusOK, r.status)

	r = get(t, e.base+"/Communication?based-on=ServiceRequest/"+long.AppointmentID)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.Len(t, entries(r.json(t), "outcome"), 1, "a warning says records were left out")

	before := len(e.sim.CreatedComments("acme", long.AppointmentID))
	body, _ := json.Marshal(map[string]any{
		"resourceType": "Communication", "status": "completed",
		"basedOn": []any{map[string]any{"reference": "ServiceRequest/" + long.AppointmentID}},
		"payload": []any{map[string]any{"contentString": "x " + phiMarker}},
	})
	r = post(t, e.base+"/Communication", body, nil)
	assert.Equal(t, http.StatusUnprocessableEntity, r.status, "%s", r.body)
	assert.Len(t, e.sim.CreatedComments("acme", long.AppointmentID), before, "QUBS was not called")
}

func TestRateLimitIgnoresForgedForwardedFor(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		sc.RateLimit = server.RateLimit{Rate: 0.01, Burst: 1}
	})
	codes := map[int]int{}
	for i := range 5 {
		r := do(t, http.MethodGet, e.base+"/metadata", http.Header{"X-Forwarded-For": {"203.0.113." + string(rune('1'+i))}}, nil)
		codes[r.status]++
	}
	assert.Equal(t, 1, codes[http.StatusOK])
	assert.Equal(t, 4, codes[http.StatusTooManyRequests])
}

func TestBinaryReadIsSafe(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	appt, _ := firstPending(t, e.sim, 32)
	guid := e.sim.PutAttachment("acme", appt.AppointmentID, qubs.Attachment{Category: "Worksheet", FileName: "page.html"}, []byte("<script>alert(1)</script>"))
	r := get(t, e.base+"/DocumentReference?related=ServiceRequest/"+appt.AppointmentID)
	var url string
	for _, m := range entries(r.json(t), "match") {
		att := resourceOf(m)["content"].([]any)[0].(map[string]any)["attachment"].(map[string]any)
		if att["title"] == "page.html" {
			url = att["url"].(string)
		}
	}
	require.NotEmpty(t, url, guid)
	res, err := http.Get(url)
	require.NoError(t, err)
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	assert.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"))
	assert.Contains(t, res.Header.Get("Content-Security-Policy"), "sandbox")
	assert.True(t, strings.HasPrefix(res.Header.Get("Content-Disposition"), "attachment"), res.Header.Get("Content-Disposition"))
}

func TestMethodNotAllowedNamesAllowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	r := do(t, http.MethodDelete, e.base+"/DiagnosticReport/x", nil, nil)
	assert.Equal(t, http.StatusMethodNotAllowed, r.status)
	assert.Equal(t, "GET, HEAD, PUT", r.header.Get("Allow"))
	r = do(t, http.MethodPost, e.base+"/metadata", nil, nil)
	assert.Equal(t, "GET, HEAD", r.header.Get("Allow"))
}

// TestTwoReportsForOneStudy: a preliminary and then a final sent as two
// different DiagnosticReports for one study; QUBS keeps one report per
// appointment, so it must end with the final, whatever the retries.
func TestTwoReportsForOneStudy(t *testing.T) {
	t.Parallel()
	var st store.Store
	e := newEnv(t, withStore(t), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		sc.Kick = func() {}
		st = sc.Store
	})
	appt, srID := firstPending(t, e.sim, 33)
	a := post(t, e.base+"/DiagnosticReport", report{srID: srID, status: "preliminary", text: "PRELIM " + phiMarker}.json(), nil)
	require.Equal(t, http.StatusCreated, a.status)
	b := post(t, e.base+"/DiagnosticReport", report{srID: srID, status: "final", text: "FINAL " + phiMarker}.json(), nil)
	require.Equal(t, http.StatusCreated, b.status)

	client, err := qubs.New(qubs.Config{BaseURL: e.sim.URL, TokenURL: e.sim.TokenURL(), ClientID: qubssim.DefaultClientID, ClientSecret: qubssim.DefaultClientSecret})
	require.NoError(t, err)
	w := &delivery.Worker{Store: st, QUBS: client, Name: "w", MaxBackoff: time.Millisecond}
	for range 20 {
		worked, err := w.DeliverOne(context.Background())
		require.NoError(t, err)
		if !worked {
			break
		}
	}
	reps := e.sim.Reports("acme", appt.AppointmentID)
	require.NotEmpty(t, reps)
	assert.Equal(t, "final", reps[len(reps)-1].Status, "QUBS ends with the final")
	r := get(t, e.base+"/DiagnosticReport/"+a.json(t)["id"].(string))
	assert.Contains(t, string(r.body), `"superseded"`)
}

// TestAuditSurvivesTimeouts: a request that timed out is still audited.
func TestAuditSurvivesTimeouts(t *testing.T) {
	t.Parallel()
	var st store.Store
	e := newEnv(t, withStore(t), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		sc.RequestTimeout = 200 * time.Millisecond
		st = sc.Store
	})
	e.sim.AddFault(qubssim.Fault{Route: "/pending", Latency: 3 * time.Second})
	r := get(t, e.base+"/ServiceRequest")
	require.Equal(t, http.StatusGatewayTimeout, r.status)
	recs, _, err := st.SearchAudit(context.Background(), "acme", store.AuditFilter{Limit: 10})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	assert.Equal(t, store.AuditOutcomeSeriousFailure, recs[0].Outcome)
}
