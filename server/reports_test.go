package server_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
)

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// firstPending returns a pending appointment of acme and its ServiceRequest id.
func firstPending(t testing.TB, sim *qubssim.Server, n int) (qubs.Appointment, string) {
	t.Helper()
	ids := sim.PendingIDs("acme")
	require.Greater(t, len(ids), n)
	a, ok := sim.Appointment("acme", ids[n])
	require.True(t, ok)
	sr, err := mapping.ServiceRequestID(a.AppointmentID)
	require.NoError(t, err)
	return a, sr
}

// TestReportingWorkflow walks what a reporting system does, through the
// router against the simulator, and checks through the simulator's
// inspection view exactly what QUBS received.
func TestReportingWorkflow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		store func(testing.TB) envOption
	}{{"sqlite", withStore}, {"postgres", withPostgres}} {
		t.Run(tc.name, func(t *testing.T) { reportingWorkflow(t, newEnv(t, tc.store(t))) })
	}
}

func reportingWorkflow(t *testing.T, e *env) {
	appt, srID := firstPending(t, e.sim, 3)
	referral := pdf("referral for the workflow test")
	guid := e.sim.PutAttachment("acme", appt.AppointmentID, qubs.Attachment{Category: "Referral", FileName: "referral.pdf"}, referral)
	require.NotEmpty(t, guid)

	// 1. The worklist has the study.
	r := get(t, e.base+"/ServiceRequest?_id="+srID)
	require.Equal(t, http.StatusOK, r.status)
	require.Len(t, entries(r.json(t), "match"), 1)

	// 2. Its referral, as DocumentReference, and its bytes through Binary.
	r = get(t, e.base+"/DocumentReference?related=ServiceRequest/"+srID)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var binaryURL string
	for _, m := range entries(r.json(t), "match") {
		doc := resourceOf(m)
		att := doc["content"].([]any)[0].(map[string]any)["attachment"].(map[string]any)
		if att["title"] == "referral.pdf" {
			binaryURL = att["url"].(string)
			assert.Equal(t, "application/pdf", att["contentType"])
		}
	}
	require.NotEmpty(t, binaryURL, "the referral is listed")
	res, err := http.Get(binaryURL)
	require.NoError(t, err)
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, "application/pdf", res.Header.Get("Content-Type"))
	assert.Equal(t, referral, got, "the referral's bytes, streamed from QUBS")

	// 3. A preliminary report with a PDF.
	reportPDF := pdf("preliminary report " + phiMarker)
	prelim := report{srID: srID, status: "preliminary", text: "Preliminary: no acute abnormality. " + phiMarker, pdfs: [][]byte{reportPDF}}
	r = post(t, e.base+"/DiagnosticReport", prelim.json(), nil)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	loc := r.header.Get("Location")
	assert.Regexp(t, `/fhir/acme/DiagnosticReport/[^/]+/_history/1$`, loc)
	assert.Equal(t, `W/"1"`, r.header.Get("ETag"))
	assert.NotEmpty(t, r.header.Get("Last-Modified"))
	dr := r.json(t)
	id := dr["id"].(string)

	eventually(t, "the preliminary report in QUBS", func() bool { return len(e.sim.Reports("acme", appt.AppointmentID)) == 1 })
	rep := e.sim.Reports("acme", appt.AppointmentID)[0]
	assert.Equal(t, "preliminary", rep.Status)
	assert.Equal(t, prelim.text, rep.Submission.ReportText)
	require.NotNil(t, rep.Submission.InterpretingClinicianName)
	assert.Equal(t, "Dr Rory Smith", *rep.Submission.InterpretingClinicianName)
	assert.Equal(t, "1234567A", *rep.Submission.InterpretingClinicianProviderNumber)
	assert.Equal(t, "rory.smith@example.org", *rep.Submission.InterpretingClinicianEmail)
	assert.Equal(t, "2025-01-10T03:04:05Z", rep.ReportedAt.UTC().Format("2006-01-02T15:04:05Z"))
	assert.NotEmpty(t, rep.IdempotencyKey)
	ups := e.sim.Uploads("acme", appt.AppointmentID)
	require.Len(t, ups, 1)
	assert.True(t, ups[0].Uploaded)
	assert.Equal(t, sha(reportPDF), ups[0].SHA256, "the artifact's bytes, by hash")
	assert.Equal(t, "application/pdf", ups[0].PutContentType)
	assert.NotEmpty(t, ups[0].IdempotencyKey)

	// The bridge serves the report with the QUBS reportGuid once delivered.
	eventually(t, "the report read back as delivered", func() bool {
		r := get(t, e.base+"/DiagnosticReport/"+id)
		return r.status == http.StatusOK && strings.Contains(string(r.body), rep.ReportGUID)
	})

	// 4. The final report, as an update of the same resource.
	final := report{srID: srID, status: "final", text: "Final: no acute abnormality. " + phiMarker, id: id}
	r = put(t, e.base+"/DiagnosticReport/"+id, final.json(), http.Header{"If-Match": {`W/"1"`}})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.Equal(t, `W/"2"`, r.header.Get("ETag"))
	eventually(t, "the final report in QUBS", func() bool { return len(e.sim.Reports("acme", appt.AppointmentID)) == 2 })
	reps := e.sim.Reports("acme", appt.AppointmentID)
	assert.Equal(t, "final", reps[1].Status)
	assert.Equal(t, final.text, reps[1].Submission.ReportText)
	assert.NotEqual(t, reps[0].IdempotencyKey, reps[1].IdempotencyKey, "each version has its own key")

	t.Run("retried PUT", func(t *testing.T) {
		// The retry of a PUT that succeeded still names version 1: it gets
		// the version it made, and nothing new is stored or sent.
		r := put(t, e.base+"/DiagnosticReport/"+id, final.json(), http.Header{"If-Match": {`W/"1"`}})
		assert.Equal(t, http.StatusOK, r.status, "%s", r.body)
		assert.Equal(t, `W/"2"`, r.header.Get("ETag"))
	})
	t.Run("stale If-Match", func(t *testing.T) {
		amended := report{srID: srID, status: "amended", text: "Amended " + phiMarker, id: id}
		r := put(t, e.base+"/DiagnosticReport/"+id, amended.json(), http.Header{"If-Match": {`W/"1"`}})
		assert.Equal(t, http.StatusPreconditionFailed, r.status, "%s", r.body)
		outcome(t, r)
	})
	t.Run("final back to preliminary", func(t *testing.T) {
		back := report{srID: srID, status: "preliminary", text: "Prelim again " + phiMarker, id: id}
		r := put(t, e.base+"/DiagnosticReport/"+id, back.json(), nil)
		assert.Equal(t, http.StatusUnprocessableEntity, r.status, "%s", r.body)
		outcome(t, r)
	})
	t.Run("versions", func(t *testing.T) {
		r := get(t, e.base+"/DiagnosticReport/"+id+"/_history/1")
		require.Equal(t, http.StatusOK, r.status)
		assert.Equal(t, "preliminary", r.json(t)["status"])
		r = get(t, e.base+"/DiagnosticReport/"+id)
		assert.Equal(t, "final", r.json(t)["status"])
		r = get(t, e.base+"/DiagnosticReport/"+id+"/_history/9")
		assert.Equal(t, http.StatusNotFound, r.status)
	})
	t.Run("search", func(t *testing.T) {
		for _, q := range []string{"based-on=ServiceRequest/" + srID, "patient=Patient/" + mapping.PatientID(&appt), "status=final"} {
			r := get(t, e.base+"/DiagnosticReport?"+q)
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			ms := entries(r.json(t), "match")
			require.Len(t, ms, 1, q)
			assert.Equal(t, id, resourceOf(ms[0])["id"])
		}
		r := get(t, e.base+"/DiagnosticReport?status=preliminary")
		assert.Empty(t, entries(r.json(t), "match"), "search sees the latest version")
	})

	// 5. A comment.
	comment := map[string]any{
		"resourceType": "Communication", "status": "completed",
		"basedOn": []any{map[string]any{"reference": "ServiceRequest/" + srID}},
		"payload": []any{map[string]any{"contentString": "Report sent to referrer. " + phiMarker}},
	}
	body, _ := json.Marshal(comment)
	r = post(t, e.base+"/Communication", body, nil)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	cs := e.sim.CreatedComments("acme", appt.AppointmentID)
	require.Len(t, cs, 1)
	assert.Equal(t, "Report sent to referrer. "+phiMarker, cs[0].Comment.CommentText)
	assert.Equal(t, qubs.CommentAppointment, cs[0].Comment.CommentType)
	assert.NotEmpty(t, cs[0].IdempotencyKey)
	commID := r.json(t)["id"].(string)
	r = get(t, e.base+"/Communication/"+commID)
	assert.Equal(t, http.StatusOK, r.status)
	r = get(t, e.base+"/Communication?based-on=ServiceRequest/"+srID)
	require.Equal(t, http.StatusOK, r.status)
	var found bool
	for _, m := range entries(r.json(t), "match") {
		found = found || resourceOf(m)["id"] == commID
	}
	assert.True(t, found, "the new comment is listed")

	// 6. The audit trail has every step, each a valid R4 AuditEvent.
	r = get(t, e.base+"/AuditEvent?_count=500")
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	steps := map[string]bool{}
	patientRef := "Patient/" + mapping.PatientID(&appt)
	for _, m := range entries(r.json(t), "match") {
		ev := resourceOf(m)
		sub := ev["subtype"].([]any)[0].(map[string]any)["code"].(string)
		var what []string
		for _, en := range ev["entity"].([]any) {
			if w, ok := en.(map[string]any)["what"].(map[string]any); ok {
				if ref, ok := w["reference"].(string); ok {
					what = append(what, ref)
				}
			}
		}
		for _, ref := range what {
			steps[sub+" "+strings.SplitN(ref, "/", 2)[0]] = true
			if ref == patientRef {
				steps[sub+" about the patient"] = true
			}
		}
	}
	for _, want := range []string{
		"search-type ServiceRequest", "search-type DocumentReference", "read Binary",
		"create DiagnosticReport", "update DiagnosticReport", "vread DiagnosticReport",
		"create Communication", "read Communication", "search-type about the patient", "create about the patient",
	} {
		assert.True(t, steps[want], "no AuditEvent for %q (have %v)", want, steps)
	}
	r = get(t, e.base+"/AuditEvent?patient="+patientRef)
	require.Equal(t, http.StatusOK, r.status)
	assert.NotEmpty(t, entries(r.json(t), "match"))

	// Exactly one of everything reached QUBS.
	assert.Len(t, e.sim.Reports("acme", appt.AppointmentID), 2)
	assert.Len(t, e.sim.Uploads("acme", appt.AppointmentID), 1)
	assert.Len(t, e.sim.CreatedComments("acme", appt.AppointmentID), 1)
}

// TestExactlyOnceUnderFaults injects throttling, server errors and lost
// answers; each submission still produces exactly one report, one comment
// and one upload per artifact in QUBS.
func TestExactlyOnceUnderFaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t), func(_ *qubssim.Options, qc *qubs.Config, _ *server.Config) {
		// No retries inside the QUBS client: every fault reaches the
		// delivery worker (or the FHIR client), whose own retries must
		// still end with exactly one of everything.
		qc.Retry.MaxAttempts = 1
	})
	appt, srID := firstPending(t, e.sim, 5)
	e.sim.AddFault(qubssim.Fault{Route: "/report/attachments", Status: http.StatusTooManyRequests, RetryAfter: "0", Count: 1})
	e.sim.AddFault(qubssim.Fault{Route: "/report/attachments", Drop: true, AfterHandling: true, Count: 1})
	e.sim.AddFault(qubssim.Fault{Method: "PUT", Route: "/presigned/", Status: http.StatusServiceUnavailable, Count: 1})
	e.sim.AddFault(qubssim.Fault{Method: "PUT", Route: "/presigned/", Drop: true, AfterHandling: true, Count: 1})
	e.sim.AddFault(qubssim.Fault{Method: "POST", Route: "/report", Status: http.StatusInternalServerError, Count: 2})
	e.sim.AddFault(qubssim.Fault{Method: "POST", Route: "/report", Drop: true, AfterHandling: true, Count: 1})
	e.sim.AddFault(qubssim.Fault{Method: "POST", Route: "/comments", Status: http.StatusBadGateway, Count: 1})
	e.sim.AddFault(qubssim.Fault{Method: "POST", Route: "/comments", Drop: true, AfterHandling: true, Count: 1})
	// The artifacts' upload slots must be created once even though the
	// report submission fails after them.

	pdfs := [][]byte{pdf("one " + phiMarker), pdf("two " + phiMarker)}
	r := post(t, e.base+"/DiagnosticReport", report{srID: srID, status: "final", text: "Final " + phiMarker, pdfs: pdfs}.json(), nil)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	id := r.json(t)["id"].(string)
	eventually(t, "delivery", func() bool {
		r := get(t, e.base+"/DiagnosticReport/"+id)
		return strings.Contains(string(r.body), `"delivered"`)
	})
	assert.Len(t, e.sim.Reports("acme", appt.AppointmentID), 1, "one report")
	var uploaded []string
	for _, u := range e.sim.Uploads("acme", appt.AppointmentID) {
		if u.Uploaded {
			uploaded = append(uploaded, u.SHA256)
		}
	}
	assert.ElementsMatch(t, []string{sha(pdfs[0]), sha(pdfs[1])}, uploaded, "one upload per artifact")
	assert.Len(t, e.sim.Uploads("acme", appt.AppointmentID), 2, "no second set of upload slots")

	// The comment: the client retries its POST after the lost answer.
	body, _ := json.Marshal(map[string]any{
		"resourceType": "Communication", "status": "completed",
		"basedOn": []any{map[string]any{"reference": "ServiceRequest/" + srID}},
		"payload": []any{map[string]any{"contentString": "Reported. " + phiMarker}},
	})
	h := http.Header{"Idempotency-Key": {"client-comment-1"}}
	var statuses []int
	for range 5 {
		st := post(t, e.base+"/Communication", body, h).status
		statuses = append(statuses, st)
		if st == http.StatusCreated {
			break
		}
	}
	require.Equal(t, http.StatusCreated, statuses[len(statuses)-1], "statuses %v", statuses)
	assert.Greater(t, len(statuses), 1, "the injected faults reached the client")
	assert.Equal(t, http.StatusCreated, post(t, e.base+"/Communication", body, h).status, "a client retry replays")
	assert.Len(t, e.sim.CreatedComments("acme", appt.AppointmentID), 1, "one comment")
}

// TestReportAcceptedWhileQUBSDown: the report is stored and answered 201
// while QUBS fails, and delivered once QUBS is back.
func TestReportAcceptedWhileQUBSDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	appt, srID := firstPending(t, e.sim, 7)
	e.sim.AddFault(qubssim.Fault{Route: "/integrations/", Status: http.StatusServiceUnavailable})
	r := post(t, e.base+"/DiagnosticReport", report{srID: srID, status: "preliminary", text: "Prelim " + phiMarker}.json(), nil)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	assert.Contains(t, string(r.body), `"pending"`)
	assert.Empty(t, e.sim.Reports("acme", appt.AppointmentID))
	ready := get(t, e.srv.URL+"/readyz")
	assert.Contains(t, string(ready.body), `"deliveries_pending":1`, "the queue is visible to operators")
	e.sim.ClearFaults()
	eventually(t, "delivery after QUBS recovers", func() bool { return len(e.sim.Reports("acme", appt.AppointmentID)) == 1 })
}

func TestReportIdempotency(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	appt, srID := firstPending(t, e.sim, 9)
	body := report{srID: srID, status: "final", text: "Final " + phiMarker}.json()

	first := post(t, e.base+"/DiagnosticReport", body, nil)
	require.Equal(t, http.StatusCreated, first.status, "%s", first.body)
	again := post(t, e.base+"/DiagnosticReport", body, nil)
	assert.Equal(t, http.StatusOK, again.status, "the same content again is the same report")
	assert.Equal(t, first.json(t)["id"], again.json(t)["id"])

	h := http.Header{"Idempotency-Key": {"k-123"}}
	other := report{srID: srID, status: "final", text: "Other " + phiMarker}.json()
	a := post(t, e.base+"/DiagnosticReport", other, h)
	require.Equal(t, http.StatusCreated, a.status)
	b := post(t, e.base+"/DiagnosticReport", other, h)
	assert.Equal(t, http.StatusCreated, b.status, "an Idempotency-Key replay repeats the answer")
	assert.Equal(t, a.json(t)["id"], b.json(t)["id"])
	c := post(t, e.base+"/DiagnosticReport", body, h)
	assert.Equal(t, http.StatusUnprocessableEntity, c.status, "the key with another resource")
	outcome(t, c)

	eventually(t, "deliveries", func() bool {
		r := get(t, e.base+"/DiagnosticReport?based-on=ServiceRequest/"+srID)
		return strings.Count(string(r.body), `"delivered"`) == 2
	})
	assert.Len(t, e.sim.Reports("acme", appt.AppointmentID), 2, "two distinct reports, each sent once")

	t.Run("conditional create", func(t *testing.T) {
		_, sr2 := firstPending(t, e.sim, 10)
		cond := http.Header{"If-None-Exist": {"based-on=ServiceRequest/" + sr2}}
		x := post(t, e.base+"/DiagnosticReport", report{srID: sr2, status: "final", text: "X " + phiMarker}.json(), cond)
		require.Equal(t, http.StatusCreated, x.status, "%s", x.body)
		y := post(t, e.base+"/DiagnosticReport", report{srID: sr2, status: "final", text: "Y " + phiMarker}.json(), cond)
		assert.Equal(t, http.StatusOK, y.status, "the condition matched: no second report")
		assert.Equal(t, x.json(t)["id"], y.json(t)["id"])
		z := post(t, e.base+"/DiagnosticReport", report{srID: sr2, status: "final", text: "Z " + phiMarker}.json(), nil)
		require.Equal(t, http.StatusCreated, z.status)
		w := post(t, e.base+"/DiagnosticReport", report{srID: sr2, status: "final", text: "W " + phiMarker}.json(), cond)
		assert.Equal(t, http.StatusPreconditionFailed, w.status, "two matches")
		outcome(t, w)
		u := post(t, e.base+"/DiagnosticReport", report{srID: sr2, status: "final", text: "U " + phiMarker}.json(), http.Header{"If-None-Exist": {"identifier=x|y"}})
		assert.Equal(t, http.StatusBadRequest, u.status, "a condition the search does not understand")
		outcome(t, u)
	})

	t.Run("a refused attempt leaves no trace", func(t *testing.T) {
		h := http.Header{"Idempotency-Key": {"k-fixed-later"}}
		bad := report{srID: srID, status: "registered", text: "bad " + phiMarker}.json()
		assert.Equal(t, http.StatusUnprocessableEntity, post(t, e.base+"/DiagnosticReport", bad, h).status)
		good := report{srID: srID, status: "final", text: "good " + phiMarker}.json()
		assert.Equal(t, http.StatusCreated, post(t, e.base+"/DiagnosticReport", good, h).status, "the corrected retry with the same key is accepted")
	})

	t.Run("Prefer", func(t *testing.T) {
		r := post(t, e.base+"/DiagnosticReport", report{srID: srID, status: "final", text: "P " + phiMarker}.json(), http.Header{"Prefer": {"return=minimal"}})
		assert.Equal(t, http.StatusCreated, r.status)
		assert.Empty(t, r.body)
		assert.NotEmpty(t, r.header.Get("Location"))
		r = post(t, e.base+"/DiagnosticReport", report{srID: srID, status: "final", text: "Q " + phiMarker}.json(), http.Header{"Prefer": {"return=OperationOutcome"}})
		assert.Equal(t, http.StatusCreated, r.status)
		assert.Equal(t, "OperationOutcome", r.json(t)["resourceType"])
	})
}

// TestBadReports: each bad input gets a precise 4xx OperationOutcome and
// QUBS receives nothing.
func TestBadReports(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	appt, srID := firstPending(t, e.sim, 11)
	gone, goneSR := firstPending(t, e.sim, 12)
	require.True(t, e.sim.SetStatus("acme", gone.AppointmentID, qubs.StatusAuthorised))

	big := strings.Repeat("a", qubs.MaxReportTextBytes) + "é" // one byte over in UTF-8, under in characters
	tooMany := make([][]byte, qubs.MaxUploadItems+1)
	for i := range tooMany {
		tooMany[i] = pdf("many")
	}
	hugePDF := append(pdf("huge"), bytes.Repeat([]byte{' '}, qubs.MaxUploadBytes)...)
	cases := []struct {
		name   string
		body   []byte
		ctype  string
		status int
		expr   string
	}{
		{"report text over 2,097,152 UTF-8 bytes", report{srID: srID, status: "final", text: big}.json(), "", http.StatusRequestEntityTooLarge, "DiagnosticReport.presentedForm[0]"},
		{"unknown status", report{srID: srID, status: "registered", text: "x"}.json(), "", http.StatusUnprocessableEntity, "DiagnosticReport.status"},
		{"missing basedOn", report{status: "final", text: "x", noBasedOn: true}.json(), "", http.StatusUnprocessableEntity, "DiagnosticReport.basedOn"},
		{"wrong artifact content type", report{srID: srID, status: "final", text: "x", extra: []map[string]any{{"contentType": "application/zip", "data": "AAAA"}}}.json(), "", http.StatusUnprocessableEntity, "DiagnosticReport.presentedForm[1].contentType"},
		{"more than 20 artifacts", report{srID: srID, status: "final", text: "x", pdfs: tooMany}.json(), "", http.StatusUnprocessableEntity, "DiagnosticReport.presentedForm"},
		{"artifact over 2 MB", report{srID: srID, status: "final", text: "x", pdfs: [][]byte{hugePDF}}.json(), "", http.StatusRequestEntityTooLarge, "DiagnosticReport.presentedForm[1]"},
		{"malformed JSON", []byte(`{"resourceType":"DiagnosticReport",`), "", http.StatusBadRequest, ""},
		{"duplicate member", bytes.Replace(report{srID: srID, status: "final", text: "x"}.json(), []byte(`"status":"final"`), []byte(`"status":"final","stat\u0075s":"preliminary"`), 1), "", http.StatusBadRequest, "twice"},
		{"wrong resourceType", []byte(`{"resourceType":"Patient","gender":"female"}`), "", http.StatusBadRequest, ""},
		{"invalid R4", []byte(`{"resourceType":"DiagnosticReport","status":"final"}`), "", http.StatusBadRequest, `missing required field \"code\"`},
		{"not JSON media type", report{srID: srID, status: "final", text: "x"}.json(), "text/plain", http.StatusUnsupportedMediaType, ""},
		{"appointment no longer pending", report{srID: goneSR, status: "final", text: "x"}.json(), "", http.StatusUnprocessableEntity, "DiagnosticReport.basedOn"},
	}
	before := len(e.sim.Requests())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.ctype != "" {
				h.Set("Content-Type", tc.ctype)
			}
			r := post(t, e.base+"/DiagnosticReport", tc.body, h)
			assert.Equal(t, tc.status, r.status, "%s", r.body)
			outcome(t, r)
			if tc.expr != "" {
				assert.Contains(t, string(r.body), tc.expr)
			}
		})
	}
	for _, rec := range e.sim.Requests()[before:] {
		if strings.Contains(rec.Route, "/oauth2/token") {
			continue
		}
		assert.NotEqual(t, http.MethodPost, rec.Method, "QUBS must receive nothing: %s %s", rec.Method, rec.Route)
		assert.NotEqual(t, http.MethodPut, rec.Method)
	}
	assert.Empty(t, e.sim.Reports("acme", appt.AppointmentID))
	assert.Empty(t, e.sim.Uploads("acme", appt.AppointmentID))
	// Nothing was stored either, so nothing will be delivered later.
	r := get(t, e.base+"/DiagnosticReport")
	assert.Empty(t, entries(r.json(t), "match"))

	others := []struct {
		name, path string
		body       string
		status     int
	}{
		{"comment without text", "/Communication", `{"resourceType":"Communication","status":"completed","basedOn":[{"reference":"ServiceRequest/` + srID + `"}],"payload":[{"contentString":"   "}]}`, http.StatusUnprocessableEntity},
		{"comment without study", "/Communication", `{"resourceType":"Communication","status":"completed","payload":[{"contentString":"x"}]}`, http.StatusUnprocessableEntity},
		{"comment on a closed study", "/Communication", `{"resourceType":"Communication","status":"completed","basedOn":[{"reference":"ServiceRequest/` + goneSR + `"}],"payload":[{"contentString":"x"}]}`, http.StatusUnprocessableEntity},
		{"comment with If-None-Exist", "/Communication?x", "", http.StatusBadRequest},
		{"document of the wrong type", "/DocumentReference", `{"resourceType":"DocumentReference","status":"current","context":{"related":[{"reference":"ServiceRequest/` + srID + `"}]},"content":[{"attachment":{"contentType":"text/html","data":"PGgxPg=="}}]}`, http.StatusUnprocessableEntity},
		{"binary of the wrong type", "/Binary", `{"resourceType":"Binary","contentType":"text/html","data":"PGgxPg=="}`, http.StatusUnprocessableEntity},
		{"binary not base64", "/Binary", `{"resourceType":"Binary","contentType":"application/pdf","data":"***"}`, http.StatusBadRequest},
	}
	for _, tc := range others {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			path, body := tc.path, []byte(tc.body)
			if path == "/Communication?x" {
				path = "/Communication"
				body = []byte(`{"resourceType":"Communication","status":"completed","basedOn":[{"reference":"ServiceRequest/` + srID + `"}],"payload":[{"contentString":"x"}]}`)
				h.Set("If-None-Exist", "based-on=ServiceRequest/"+srID)
			}
			r := post(t, e.base+path, body, h)
			assert.Equal(t, tc.status, r.status, "%s", r.body)
			outcome(t, r)
		})
	}
	assert.Empty(t, e.sim.CreatedComments("acme", appt.AppointmentID))
	assert.Empty(t, e.sim.Uploads("acme", appt.AppointmentID))
}

func TestBinaryAndDocumentReferenceCreate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	appt, srID := firstPending(t, e.sim, 13)
	file := pdf("artifact " + phiMarker)

	// A Binary first, then a report whose presentedForm points at it.
	bin, _ := json.Marshal(map[string]any{"resourceType": "Binary", "contentType": "application/pdf", "data": base64.StdEncoding.EncodeToString(file)})
	r := post(t, e.base+"/Binary", bin, nil)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	binURL := r.header.Get("Location")
	require.NotEmpty(t, binURL)
	res, err := http.Get(binURL)
	require.NoError(t, err)
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, file, got)

	rep := report{srID: srID, status: "final", text: "Final " + phiMarker, extra: []map[string]any{{"contentType": "application/pdf", "url": binURL, "title": "by-url.pdf"}}}
	r = post(t, e.base+"/DiagnosticReport", rep.json(), nil)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	eventually(t, "delivery", func() bool { return len(e.sim.Reports("acme", appt.AppointmentID)) == 1 })
	ups := e.sim.Uploads("acme", appt.AppointmentID)
	require.Len(t, ups, 1)
	assert.Equal(t, sha(file), ups[0].SHA256)

	// A DocumentReference create uploads at once.
	doc, _ := json.Marshal(map[string]any{
		"resourceType": "DocumentReference", "status": "current",
		"context": map[string]any{"related": []any{map[string]any{"reference": "ServiceRequest/" + srID}}},
		"content": []any{map[string]any{"attachment": map[string]any{"contentType": "application/pdf", "title": "addendum.pdf", "data": base64.StdEncoding.EncodeToString(file)}}},
	})
	r = post(t, e.base+"/DocumentReference", doc, http.Header{"Idempotency-Key": {"doc-1"}})
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	docID := r.json(t)["id"].(string)
	again := post(t, e.base+"/DocumentReference", doc, http.Header{"Idempotency-Key": {"doc-1"}})
	assert.Equal(t, docID, again.json(t)["id"], "a retried create is the same document")
	assert.Len(t, e.sim.Uploads("acme", appt.AppointmentID), 2, "one more upload, not two")
	other, _ := json.Marshal(map[string]any{
		"resourceType": "DocumentReference", "status": "current",
		"context": map[string]any{"related": []any{map[string]any{"reference": "ServiceRequest/" + srID}}},
		"content": []any{map[string]any{"attachment": map[string]any{"contentType": "application/pdf", "title": "other.pdf", "data": base64.StdEncoding.EncodeToString(pdf("other"))}}},
	})
	r = post(t, e.base+"/DocumentReference", other, http.Header{"Idempotency-Key": {"doc-1"}})
	assert.Equal(t, http.StatusUnprocessableEntity, r.status, "the key with another document")
	outcome(t, r)
	assert.Len(t, e.sim.Uploads("acme", appt.AppointmentID), 2)
	r = get(t, e.base+"/DocumentReference/"+docID)
	assert.Equal(t, http.StatusOK, r.status, "%s", r.body)

	t.Run("unknown binary url", func(t *testing.T) {
		rep := report{srID: srID, status: "final", text: "x", extra: []map[string]any{{"contentType": "application/pdf", "url": e.base + "/Binary/bin-nope"}}}
		r := post(t, e.base+"/DiagnosticReport", rep.json(), nil)
		assert.Equal(t, http.StatusUnprocessableEntity, r.status, "%s", r.body)
		outcome(t, r)
	})
}

func TestFlagsAndComments(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	appt, srID := firstPending(t, e.sim, 15)
	require.NotEmpty(t, appt.PatientID)
	e.sim.PutComment("acme", qubs.Comment{AppointmentID: appt.AppointmentID, PatientID: appt.PatientID, CommentType: qubs.CommentAppointmentAlert, IsAlert: true, CommentText: "Contrast allergy " + phiMarker})
	e.sim.PutComment("acme", qubs.Comment{PatientID: appt.PatientID, CommentType: qubs.CommentPatientAlert, IsAlert: true, CommentText: "Falls risk " + phiMarker})
	r := get(t, e.base+"/Flag?patient=Patient/"+mapping.PatientID(&appt))
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	flags := entries(r.json(t), "match")
	var texts []string
	for _, f := range flags {
		texts = append(texts, resourceOf(f)["code"].(map[string]any)["text"].(string))
		id := resourceOf(f)["id"].(string)
		assert.Equal(t, http.StatusOK, get(t, e.base+"/Flag/"+id).status)
	}
	assert.Contains(t, texts, "Contrast allergy "+phiMarker)
	assert.Contains(t, texts, "Falls risk "+phiMarker)

	r = get(t, e.base+"/Communication?based-on=ServiceRequest/"+srID)
	require.Equal(t, http.StatusOK, r.status)
	assert.GreaterOrEqual(t, len(entries(r.json(t), "match")), 2)

	for _, q := range []string{"/Flag", "/Communication", "/DocumentReference"} {
		r := get(t, e.base+q)
		assert.Equal(t, http.StatusBadRequest, r.status, "%s needs criteria", q)
		outcome(t, r)
	}
	for _, p := range []string{"/Flag/nope", "/Communication/nope", "/DocumentReference/nope", "/Binary/nope"} {
		assert.Equal(t, http.StatusNotFound, get(t, e.base+p).status, p)
	}
}
