package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/delivery"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite/sqlitetest"
)

// withStore gives the bridge a real SQLite store in the test's temporary
// directory; newEnv then runs a real delivery worker against the simulator.
func withStore(t testing.TB) envOption {
	return func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		sc.Store = sqlitetest.Open(t)
	}
}

// withPostgres gives the bridge a real PostgreSQL store in a schema of its
// own (BRIDGE_TEST_POSTGRES_URL, or the local server).
func withPostgres(t testing.TB) envOption {
	return func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		sc.Store = pgtest.Open(t)
	}
}

// startWorker runs a delivery worker until the test ends and wires its
// kick into the server.
func startWorker(t testing.TB, st store.Store, client *qubs.Client, sc *server.Config) {
	// The worker logs where the server does, so the PHI check reads both.
	// Observed whenever the server is (nil when it is not).
	// One worker of a pool, as serve runs them: a new version's bytes go
	// to the worker in memory (Pool.Accepted).
	pool := delivery.NewPool(1, delivery.Worker{Store: st, QUBS: client, Name: "test-worker", Logger: sc.Logger, PollInterval: 20 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond, Observer: observe.Delivery(sc.Metrics, sc.Tracer)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); pool.Run(ctx) }()
	sc.Kick, sc.Accepted = pool.Kick, pool.Accepted
	t.Cleanup(func() { cancel(); <-done })
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pdf is a small valid PDF with a marker line, so artifacts are real files.
func pdf(marker string) []byte {
	body := "BT /F1 12 Tf 72 720 Td (" + marker + ") Tj ET"
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n")
	b.WriteString("1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n")
	b.WriteString("2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n")
	b.WriteString("3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]/Contents 4 0 R>>endobj\n")
	b.WriteString("4 0 obj<</Length " + strconv.Itoa(len(body)) + ">>stream\n" + body + "\nendstream endobj\n")
	b.WriteString("trailer<</Root 1 0 R>>\n%%EOF\n")
	return b.Bytes()
}

// report builds a DiagnosticReport as a reporting system would send it.
type report struct {
	srID      string
	status    string
	text      string
	pdfs      [][]byte
	extra     []map[string]any // more presentedForms
	noBasedOn bool
	id        string
}

func (r report) json() []byte {
	forms := []map[string]any{}
	if r.text != "" {
		forms = append(forms, map[string]any{"contentType": "text/plain", "data": base64.StdEncoding.EncodeToString([]byte(r.text))})
	}
	for i, p := range r.pdfs {
		forms = append(forms, map[string]any{"contentType": "application/pdf", "title": "report-" + strconv.Itoa(i) + ".pdf", "data": base64.StdEncoding.EncodeToString(p)})
	}
	forms = append(forms, r.extra...)
	m := map[string]any{
		"resourceType": "DiagnosticReport",
		"status":       r.status,
		"category":     []any{map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"}}}},
		"code":         map[string]any{"text": "CT chest report"},
		"issued":       "2025-01-10T14:04:05+11:00",
		"contained": []any{map[string]any{
			"resourceType": "Practitioner", "id": "rad",
			"identifier": []any{map[string]any{"system": "http://ns.electronichealth.net.au/id/medicare-provider-number", "value": "1234567A"}},
			"name":       []any{map[string]any{"text": "Dr Rory Smith"}},
			"telecom":    []any{map[string]any{"system": "email", "value": "rory.smith@example.org"}},
		}},
		"resultsInterpreter": []any{map[string]any{"reference": "#rad"}},
		"presentedForm":      forms,
	}
	if !r.noBasedOn {
		m["basedOn"] = []any{map[string]any{"reference": "ServiceRequest/" + r.srID}}
	}
	if r.id != "" {
		m["id"] = r.id
	}
	b, _ := json.Marshal(m)
	return b
}

func post(t testing.TB, u string, body []byte, h http.Header) *response {
	t.Helper()
	if h == nil {
		h = http.Header{}
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/fhir+json")
	}
	return do(t, http.MethodPost, u, h, bytes.NewReader(body))
}

func put(t testing.TB, u string, body []byte, h http.Header) *response {
	t.Helper()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Type", "application/fhir+json")
	return do(t, http.MethodPut, u, h, bytes.NewReader(body))
}
