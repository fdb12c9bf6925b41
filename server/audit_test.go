package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// withStoreHandle hands the test the store another option configured.
func withStoreHandle(st *store.Store) envOption {
	return func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) { *st = sc.Store }
}

// answerDiscloses reads, in the test, what an answer carried: the resource
// itself or a Bundle's entries, and the patients they are about (a Patient,
// or a subject or patient reference to one). The server no longer reads
// its answers again; its handlers report what they put in them, and this
// is the check that they report exactly that.
func answerDiscloses(t *testing.T, body []byte) (entities, patients []string) {
	t.Helper()
	patients, entities = server.DisclosedInAnswer(body)
	return entities, patients
}

// relativeRef turns an absolute resource URL (a Location) into "Type/id",
// without its _history part.
func relativeRef(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	require.NoError(t, err)
	parts := strings.Split(p.Path, "/")
	i := slices.Index(parts, "fhir")
	require.GreaterOrEqual(t, i, 0, u)
	return parts[i+2] + "/" + parts[i+3]
}

func uniqueSorted(refs []string) []string {
	out := slices.Clone(refs)
	slices.Sort(out)
	return slices.Compact(out)
}

// TestAuditNamesWhatTheAnswerCarried: for every audited route, the audit
// record names exactly the resources and patients of the answer the client
// received, as read off that answer here, plus what a create made (its
// Location) and what a read was for (its id). Handlers report both with
// disclose; a route whose handler does not yet fails here by name.
func TestAuditNamesWhatTheAnswerCarried(t *testing.T) {
	t.Parallel()
	var st store.Store
	e := newEnv(t, withStore(t), withStoreHandle(&st))
	// A study with a known patient, so that its answers name one.
	var appt qubs.Appointment
	var srID string
	for i := 5; appt.PatientID == ""; i++ {
		appt, srID = firstPending(t, e.sim, i)
	}
	patient := "Patient/" + mapping.PatientID(&appt)
	e.sim.PutAttachment("acme", appt.AppointmentID, qubs.Attachment{Category: "Referral", FileName: "referral.pdf"}, pdf("referral"))
	e.sim.PutComment("acme", qubs.Comment{AppointmentID: appt.AppointmentID, PatientID: appt.PatientID,
		CommentType: qubs.CommentAppointmentAlert, IsAlert: true, CommentText: "Contrast allergy " + phiMarker})

	// What later cases need, learnt from earlier answers.
	ids := map[string]string{}
	covered := map[string]bool{}
	n := 0
	check := func(name, method, path string, header http.Header, body []byte, extraPatients ...string) *response {
		t.Helper()
		var r *response
		t.Run(name, func(t *testing.T) {
			n++
			cid := fmt.Sprintf("audit-case-%d", n)
			h := http.Header{"X-Correlation-Id": {cid}}
			for k, vs := range header {
				h[k] = vs
			}
			if body != nil && h.Get("Content-Type") == "" {
				h.Set("Content-Type", "application/fhir+json")
			}
			var rd io.Reader
			if body != nil {
				rd = bytes.NewReader(body)
			}
			r = do(t, method, e.base+path, h, rd)
			require.Less(t, r.status, 300, "%s", r.body)
			wantEntities, wantPatients := answerDiscloses(t, r.body)
			if loc := r.header.Get("Location"); loc != "" {
				wantEntities = append(wantEntities, relativeRef(t, loc))
			}
			// A read names what it was for, and so does an operation on
			// an instance.
			if (method == http.MethodGet || strings.Contains(path, "/$")) && !strings.Contains(path, "?") && strings.Count(path, "/") >= 2 {
				parts := strings.Split(path, "/")
				wantEntities = append(wantEntities, parts[1]+"/"+parts[2])
			}
			wantPatients = append(wantPatients, extraPatients...)

			var rec *store.AuditRecord
			eventually(t, "the audit record of "+cid, func() bool {
				recs, _, err := st.SearchAudit(context.Background(), "acme", store.AuditFilter{Limit: 20})
				require.NoError(t, err)
				for _, a := range recs {
					if a.CorrelationID == cid {
						rec = a
						return true
					}
				}
				return false
			})
			covered[method+" "+rec.RequestPath] = true
			assert.Equal(t, uniqueSorted(wantEntities), uniqueSorted(rec.EntityRefs), "resources")
			assert.Equal(t, uniqueSorted(wantPatients), uniqueSorted(rec.PatientRefs), "patients")
		})
		if r == nil {
			t.FailNow() // a later case needs this one's answer
		}
		return r
	}
	ref := func(res map[string]any, field string) string {
		m, _ := res[field].(map[string]any)
		s, _ := m["reference"].(string)
		return s
	}

	// The worklist (another engineer's handlers: they report with
	// disclose once converted).
	r := check("ServiceRequest search with includes", "GET", "/ServiceRequest?"+query("_count", "5",
		"_include", "ServiceRequest:subject", "_include", "ServiceRequest:requester", "_include", "ServiceRequest:performer"), nil, nil)
	for _, inc := range entries(r.json(t), "include") {
		res := resourceOf(inc)
		ids[res["resourceType"].(string)] = res["id"].(string)
	}
	check("ServiceRequest POST _search", "POST", "/ServiceRequest/_search",
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, []byte(query("_id", srID)))
	check("ServiceRequest read", "GET", "/ServiceRequest/"+srID, nil, nil)
	for _, typ := range []string{"Patient", "Practitioner", "Organization"} {
		if ids[typ] != "" {
			check(typ+" read", "GET", "/"+typ+"/"+ids[typ], nil, nil)
		}
	}

	// Documents, comments and flags.
	r = check("DocumentReference search", "GET", "/DocumentReference?related=ServiceRequest/"+srID, nil, nil)
	for _, m := range entries(r.json(t), "match") {
		doc := resourceOf(m)
		ids["DocumentReference"] = doc["id"].(string)
		ids["Binary"] = relativeRef(t, doc["content"].([]any)[0].(map[string]any)["attachment"].(map[string]any)["url"].(string))
		ids["DocumentReference.subject"] = ref(doc, "subject")
	}
	require.NotEmpty(t, ids["DocumentReference"])
	check("DocumentReference read", "GET", "/DocumentReference/"+ids["DocumentReference"], nil, nil)
	// The bytes carry no references: the patient is the document's.
	check("Binary read", "GET", "/"+ids["Binary"], nil, nil, ids["DocumentReference.subject"])
	doc, _ := json.Marshal(map[string]any{
		"resourceType": "DocumentReference", "status": "current",
		"context": map[string]any{"related": []any{map[string]any{"reference": "ServiceRequest/" + srID}}},
		"content": []any{map[string]any{"attachment": map[string]any{"contentType": "application/pdf", "title": "addendum.pdf",
			"data": base64.StdEncoding.EncodeToString(pdf("addendum"))}}},
	})
	check("DocumentReference create", "POST", "/DocumentReference", nil, doc)

	r = check("Communication search", "GET", "/Communication?based-on=ServiceRequest/"+srID, nil, nil)
	for _, m := range entries(r.json(t), "match") {
		ids["Communication"] = resourceOf(m)["id"].(string)
	}
	require.NotEmpty(t, ids["Communication"])
	check("Communication read", "GET", "/Communication/"+ids["Communication"], nil, nil)
	comm, _ := json.Marshal(map[string]any{
		"resourceType": "Communication", "status": "completed",
		"basedOn": []any{map[string]any{"reference": "ServiceRequest/" + srID}},
		"subject": map[string]any{"reference": patient},
		"payload": []any{map[string]any{"contentString": "Please call the referrer " + phiMarker}},
	})
	check("Communication create", "POST", "/Communication", nil, comm)
	r = check("Flag search", "GET", "/Flag?patient="+patient, nil, nil)
	for _, m := range entries(r.json(t), "match") {
		ids["Flag"] = resourceOf(m)["id"].(string)
	}
	require.NotEmpty(t, ids["Flag"])
	check("Flag read", "GET", "/Flag/"+ids["Flag"], nil, nil)

	// Reports (another engineer's handlers).
	bin, _ := json.Marshal(map[string]any{"resourceType": "Binary", "contentType": "application/pdf", "data": base64.StdEncoding.EncodeToString(pdf("artifact"))})
	check("Binary create", "POST", "/Binary", nil, bin)
	// A report names no subject of its own here (the client sent none):
	// its patient is the study's, and the audit names it.
	r = check("DiagnosticReport create", "POST", "/DiagnosticReport", nil,
		report{srID: srID, status: "preliminary", text: "Preliminary " + phiMarker}.json(), patient)
	drID, _ := r.json(t)["id"].(string)
	require.NotEmpty(t, drID)
	check("DiagnosticReport search", "GET", "/DiagnosticReport?based-on=ServiceRequest/"+srID, nil, nil, patient)
	check("DiagnosticReport read", "GET", "/DiagnosticReport/"+drID, nil, nil, patient)
	check("DiagnosticReport update", "PUT", "/DiagnosticReport/"+drID, nil,
		report{srID: srID, status: "final", text: "Final " + phiMarker, id: drID}.json(), patient)
	check("DiagnosticReport vread", "GET", "/DiagnosticReport/"+drID+"/_history/1", nil, nil, patient)

	// An operation: $redeliver of a report whose delivery QUBS refused.
	var appt2 qubs.Appointment
	var srID2 string
	for i := 30; appt2.PatientID == "" || appt2.PatientID == appt.PatientID; i++ {
		appt2, srID2 = firstPending(t, e.sim, i)
	}
	e.sim.AddFault(qubssim.Fault{Method: http.MethodPost, Route: "/report", Status: http.StatusNotFound, Count: 1})
	r = do(t, http.MethodPost, e.base+"/DiagnosticReport", http.Header{"Content-Type": {"application/fhir+json"}},
		bytes.NewReader(report{srID: srID2, status: "final", text: "Final " + phiMarker}.json()))
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	failedID := r.json(t)["id"].(string)
	eventually(t, "the delivery failing", func() bool {
		return strings.Contains(string(get(t, e.base+"/DiagnosticReport/"+failedID).body), `"failed"`)
	})
	check("DiagnosticReport $redeliver", "POST", "/DiagnosticReport/"+failedID+"/$redeliver", nil, nil,
		"Patient/"+mapping.PatientID(&appt2))

	// The audit trail itself.
	r = check("AuditEvent search", "GET", "/AuditEvent?_count=3", nil, nil)
	aeID := resourceOf(entries(r.json(t), "match")[0])["id"].(string)
	check("AuditEvent read", "GET", "/AuditEvent/"+aeID, nil, nil)

	// Every audited route has a case, so that a new route cannot go
	// unchecked.
	var want []string
	for _, rt := range []string{
		"GET ServiceRequest", "POST ServiceRequest/_search", "GET ServiceRequest/:id",
		"GET Patient/:id", "GET Practitioner/:id", "GET Organization/:id",
		"GET DocumentReference", "GET DocumentReference/:id", "POST DocumentReference", "GET Binary/:id", "POST Binary",
		"GET Communication", "GET Communication/:id", "POST Communication", "GET Flag", "GET Flag/:id",
		"POST DiagnosticReport", "GET DiagnosticReport", "GET DiagnosticReport/:id", "PUT DiagnosticReport/:id",
		"GET DiagnosticReport/:id/_history/:vid", "POST DiagnosticReport/:id/$redeliver", "GET AuditEvent", "GET AuditEvent/:id",
	} {
		method, path, _ := strings.Cut(rt, " ")
		want = append(want, method+" /fhir/:domain/"+path)
	}
	var got []string
	for k := range covered {
		got = append(got, k)
	}
	assert.ElementsMatch(t, want, got, "audited routes covered")
}
