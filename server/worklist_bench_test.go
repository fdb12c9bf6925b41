package server_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
)

// BenchmarkWorklistWalk is what the bench harness's worklist clients do,
// in process: 16 clients each walking the worklist by next links (pages
// of 100) and starting again at the end, with the audit on SQLite. Unlike
// BenchmarkSearch100, which repeats a first page, it counts what a walk
// shares between pages (QUBS pages read once, their rests kept) and what
// concurrency shares (audit batches). cpu-µs/op includes the simulator.
func BenchmarkWorklistWalk(b *testing.B) {
	e := newEnv(b, withStore(b), noKick())
	h := e.srv.Config.Handler
	first := "/fhir/acme/ServiceRequest?_count=100"
	b.SetParallelism(8) // 16 clients on 2 cores
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		next := first
		for pb.Next() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, next, nil))
			if rec.Code != http.StatusOK {
				b.Errorf("status %d: %s", rec.Code, rec.Body)
				return
			}
			next = nextLink(rec.Body.Bytes(), e.srv.URL)
			if next == "" {
				next = first
			}
		}
	})
}

// nextLink finds the next link of a Bundle without decoding it (the
// bridge writes links first, each as {"relation":"...","url":"..."}),
// as a path on the server.
func nextLink(body []byte, srvURL string) string {
	_, rest, ok := bytes.Cut(body, []byte(`"relation":"next","url":"`))
	if !ok {
		return ""
	}
	u, _, _ := bytes.Cut(rest, []byte(`"`))
	return strings.TrimPrefix(strings.ReplaceAll(string(u), `\u0026`, "&"), "http://example.com")
}

// BenchmarkReadParallel is what the bench harness's read clients do, in
// process: 16 clients reading pending ServiceRequests by id, with the
// audit on SQLite. cpu-µs/op includes the simulator.
func BenchmarkReadParallel(b *testing.B) {
	b.Run("queue", func(b *testing.B) { readParallel(b, newEnv(b, withStore(b), noKick())) })
	b.Run("journal", func(b *testing.B) { readParallel(b, newEnv(b, withStore(b), withJournal(b), noKick())) })
}

// BenchmarkReadParallelPostgres is BenchmarkReadParallel on PostgreSQL:
// each read waiting for its audit record's commit, as serve's default
// without a journal (BRIDGE_AUDIT_WAIT=auto) makes it there, or for its
// append to the journal (BRIDGE_AUDIT_JOURNAL set, as the Helm chart
// does); pg-cpu-µs/op is the database server's CPU per read (every
// postgres process's, so other work on the same server counts too).
func BenchmarkReadParallelPostgres(b *testing.B) {
	for _, tc := range []struct {
		name string
		opt  func(testing.TB) envOption
	}{
		{"commit", func(testing.TB) envOption { return commitReads() }},
		{"journal", withJournal},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEnv(b, withPostgres(b), tc.opt(b), noKick())
			pg0 := pgtest.ServerCPU()
			readParallel(b, e)
			if b.N > 0 {
				b.ReportMetric(float64((pgtest.ServerCPU()-pg0).Microseconds())/float64(b.N), "pg-cpu-µs/op")
			}
		})
	}
}

func readParallel(b *testing.B, e *env) {
	h := e.srv.Config.Handler
	var paths []string
	for _, id := range e.sim.PendingIDs("acme")[:200] {
		sr, err := mapping.ServiceRequestID(id)
		if err != nil {
			b.Fatal(err)
		}
		paths = append(paths, "/fhir/acme/ServiceRequest/"+sr)
	}
	var n atomic.Int64
	b.SetParallelism(8)
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, paths[int(n.Add(1))%len(paths)], nil))
			if rec.Code != http.StatusOK {
				b.Errorf("status %d: %s", rec.Code, rec.Body)
				return
			}
		}
	})
}
