package server_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkSearchByDate is a worklist page of 100 served from the index
// (SQLite, 1,200 studies over the simulator's sites in four zones)
// filtered by occurrence: a date without a time is each site's local day,
// month or range (compared with the rows' wall-clock columns).
func BenchmarkSearchByDate(b *testing.B) {
	e, _, domain := indexedEnv(b, 1200)
	var day string
	for _, id := range e.sim.PendingIDs(domain) {
		if a, ok := e.sim.Appointment(domain, id); ok && a.AppointmentDate != nil {
			day = *a.AppointmentDate
			break
		}
	}
	h := e.srv.Config.Handler
	for _, tc := range []struct{ name, q string }{
		{"day", "occurrence=" + day},
		{"month", "occurrence=" + day[:7]},
		{"from", "occurrence=ge" + day},
	} {
		b.Run(tc.name, func(b *testing.B) {
			path := "/fhir/" + domain + "/ServiceRequest?_count=100&" + tc.q
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
