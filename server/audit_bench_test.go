package server_test

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auditjournal"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
)

// BenchmarkAudit is the 100-entry worklist search through the real router
// with the audit off (no store), and on over SQLite and PostgreSQL (reads
// waiting for room in the buffer, or for their commit): the
// difference is what the audit costs a request. cpu-ns/op is the process's
// CPU time (user+system) per request, background goroutines included, so
// that work moved off the request (the audit writer) still counts.
func BenchmarkAudit(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts func(testing.TB) []envOption
	}{
		{"off", func(testing.TB) []envOption { return nil }},
		{"sqlite", func(t testing.TB) []envOption { return []envOption{withStore(t), noKick()} }},
		{"postgres", func(t testing.TB) []envOption { return []envOption{withPostgres(t), noKick()} }},
		// What serve does on PostgreSQL (BRIDGE_AUDIT_WAIT=auto): reads
		// wait for their batch's commit.
		{"postgres-commit", func(t testing.TB) []envOption { return []envOption{withPostgres(t), noKick(), commitReads()} }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEnv(b, tc.opts(b)...)
			h := e.srv.Config.Handler
			req := httptest.NewRequest(http.MethodGet, "/fhir/acme/ServiceRequest?_count=100", nil)
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// noKick leaves the delivery worker out: a search delivers nothing.
func noKick() envOption {
	return func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) { sc.Kick = func() {} }
}

// withJournal gives the bridge an audit journal in the test's temporary
// directory (BRIDGE_AUDIT_JOURNAL).
func withJournal(t testing.TB) envOption {
	return func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		j, err := auditjournal.Open(filepath.Join(t.TempDir(), "journal"), auditjournal.Options{})
		require.NoError(t, err)
		sc.AuditJournal = j
	}
}

func commitReads() envOption {
	return func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) { sc.AuditCommitReads = true }
}
