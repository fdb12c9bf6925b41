package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
)

// FuzzCreate sends arbitrary bodies to every create and update endpoint through the
// real router, with a real store and the simulator behind it. Whatever the
// body, the answer is never a 5xx, and every refusal is an
// OperationOutcome.
func FuzzCreate(f *testing.F) {
	e := newEnv(f, withStore(f))
	appt := e.sim.PendingIDs("acme")[0]
	srID, _ := mapping.ServiceRequestID(appt)
	f.Add(uint8(0), report{srID: srID, status: "final", text: "x"}.json())
	f.Add(uint8(0), report{srID: srID, status: "preliminary", pdfs: [][]byte{pdf("x")}}.json())
	f.Add(uint8(0), []byte(`{"resourceType":"DiagnosticReport","status":"final","code":{"text":"x"},"basedOn":[{"reference":"ServiceRequest/`+srID+`"}],"presentedForm":[{"contentType":"text/plain; charset=latin1","data":"AAAA"}]}`))
	f.Add(uint8(1), []byte(`{"resourceType":"Communication","status":"completed","basedOn":[{"reference":"ServiceRequest/`+srID+`"}],"payload":[{"contentString":"hello"}]}`))
	f.Add(uint8(2), []byte(`{"resourceType":"DocumentReference","status":"current","context":{"related":[{"reference":"ServiceRequest/`+srID+`"}]},"content":[{"attachment":{"contentType":"application/pdf","data":"JVBERi0="}}]}`))
	f.Add(uint8(3), []byte(`{"resourceType":"Binary","contentType":"application/pdf","data":"JVBERi0xLjQK"}`))
	f.Add(uint8(0), []byte(`{"resourceType":"DiagnosticReport","contained":[{"resourceType":"Practitioner","id":"a"}],"resultsInterpreter":[{"reference":"#a"}]}`))
	f.Add(uint8(0), []byte(`[]`))
	f.Add(uint8(1), []byte(`{"resourceType":"Communication","status":"completed","basedOn":[{"reference":"ServiceRequest/b32-"}],"payload":[{"contentString":" "}]}`))
	h := e.srv.Config.Handler
	// The fuzz coordinator itself may run no input; one request gives the
	// PHI-in-logs check something to read.
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/fhir/acme/metadata", nil))
	// An existing report, so that updates reach past the lookup.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/fhir/acme/DiagnosticReport", bytes.NewReader(report{srID: srID, status: "preliminary", text: "seed"}.json()))
	req.Header.Set("Content-Type", "application/fhir+json")
	h.ServeHTTP(rec, req)
	var created struct{ ID string }
	_ = json.Unmarshal(rec.Body.Bytes(), &created)
	f.Add(uint8(4), report{srID: srID, status: "final", text: "update", id: created.ID}.json())
	paths := []string{"/DiagnosticReport", "/Communication", "/DocumentReference", "/Binary", "/DiagnosticReport/" + created.ID}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := "/fhir/acme" + paths[int(which)%len(paths)]
		method := http.MethodPost
		if strings.Count(path, "/") > 3 {
			method = http.MethodPut
		}
		req := httptest.NewRequest(method, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+json")
		rec := httptest.NewRecorder()
		done := make(chan struct{})
		go func() { defer close(done); h.ServeHTTP(rec, req) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s %s did not answer within 10 s", method, path)
		}
		if rec.Code >= 500 {
			t.Fatalf("%s %s answered %d: %s", method, path, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			var oo struct{ ResourceType string }
			if err := json.Unmarshal(rec.Body.Bytes(), &oo); err != nil || oo.ResourceType != "OperationOutcome" {
				t.Fatalf("%s %s answered %d without an OperationOutcome: %s", method, path, rec.Code, rec.Body)
			}
		}
	})
}
