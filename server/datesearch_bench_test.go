package server_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
)

// BenchmarkSearchByDate is a worklist page of 100 served from the index
// (SQLite, 1,200 studies over the simulator's sites in four zones)
// filtered by occurrence: a date without a time is each site's local day,
// month or range (compared with the rows' wall-clock columns).
func BenchmarkSearchByDate(b *testing.B) {
	e, _, domain := indexedEnv(b, 1200)
	day := firstDay(e, domain)
	for _, tc := range []struct{ name, q string }{
		{"day", "occurrence=" + day},
		{"month", "occurrence=" + day[:7]},
		{"from", "occurrence=ge" + day},
	} {
		b.Run(tc.name, func(b *testing.B) {
			serveEach(b, e, "/fhir/"+domain+"/ServiceRequest?_count=100&"+tc.q)
		})
	}
}

// BenchmarkSearchByDateWalk is BenchmarkSearchByDate's day with the index
// off: the bridge walks QUBS (1,200 studies) and compares each study's
// date columns as the index query would.
func BenchmarkSearchByDateWalk(b *testing.B) {
	e := newEnv(b, func(so *qubssim.Options, _ *qubs.Config, _ *server.Config) { so.Appointments = 1200 })
	domain := e.sim.Domains()[0]
	serveEach(b, e, "/fhir/"+domain+"/ServiceRequest?_count=100&occurrence="+firstDay(e, domain))
}

// firstDay is the date of the first pending appointment that has one.
func firstDay(e *env, domain string) string {
	for _, id := range e.sim.PendingIDs(domain) {
		if a, ok := e.sim.Appointment(domain, id); ok && a.AppointmentDate != nil {
			return *a.AppointmentDate
		}
	}
	return ""
}

// serveEach serves GET path through the router b.N times, reporting CPU
// and allocations per request.
func serveEach(b *testing.B, e *env, path string) {
	h := e.srv.Config.Handler
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}
