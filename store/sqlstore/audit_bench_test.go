package sqlstore_test

import (
	"context"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
)

// engines open a fresh Store per benchmark on each engine.
var engines = []struct {
	name string
	open func(b *testing.B) *sqlstore.Store
}{
	{"sqlite", func(b *testing.B) *sqlstore.Store {
		st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "bridge.db"))
		require.NoError(b, err)
		b.Cleanup(func() { st.Close() })
		return st
	}},
	{"postgres", func(b *testing.B) *sqlstore.Store { return pgtest.Open(b) }},
}

// BenchmarkRecordAudits is the audit writer's work alone, serial, so that
// its CPU per record is steadier on a shared machine than the server's
// parallel benchmarks: "read" records name one patient (a read of a
// ServiceRequest), written in batches of the given size, the commit
// shared by the batch; "page" records name 100 patients of a worklist of
// 1,200, page after page, as a walk of 16 clients writes them (batches of
// 16). cpu-ns/op is the process's CPU per record; on PostgreSQL,
// pg-cpu-ns/op is the server's.
func BenchmarkRecordAudits(b *testing.B) {
	rec := func(i, patients int) *store.AuditRecord {
		r := &store.AuditRecord{Domain: "acme", Action: store.AuditActionRead, Interaction: "read",
			Outcome: store.AuditOutcomeSuccess, CorrelationID: "bench-" + strconv.Itoa(i),
			RequestPath: "/fhir/:domain/ServiceRequest/:id", NetworkAddr: "127.0.0.1"}
		if patients > 1 {
			r.Action, r.Interaction, r.Query = store.AuditActionExecute, "search-type", "ServiceRequest?_count"
			r.RequestPath = "/fhir/:domain/ServiceRequest"
		}
		first := i * patients % 1200
		for j := range patients {
			p := strconv.Itoa(100000 + (first+j)%1200)
			r.EntityRefs = append(r.EntityRefs, "ServiceRequest/A"+p)
			r.PatientRefs = append(r.PatientRefs, "Patient/"+p)
		}
		return r
	}
	cases := []struct {
		name            string
		patients, batch int
	}{
		{"read/batch=1", 1, 1},
		{"read/batch=4", 1, 4},
		{"read/batch=16", 1, 16},
		{"read/batch=64", 1, 64},
		{"page/batch=4", 100, 4},
		{"page/batch=16", 100, 16},
		{"page/batch=64", 100, 64},
		{"page/batch=256", 100, 256},
	}
	for _, eng := range engines {
		for _, tc := range cases {
			b.Run(eng.name+"/"+tc.name, func(b *testing.B) {
				ctx := context.Background()
				st := eng.open(b)
				b.ReportAllocs()
				cpu0, pg0 := rusage(), pgtest.ServerCPU()
				for i := 0; i < b.N; i += tc.batch {
					batch := make([]*store.AuditRecord, 0, tc.batch)
					for j := i; j < min(i+tc.batch, b.N); j++ {
						batch = append(batch, rec(j, tc.patients))
					}
					require.NoError(b, st.RecordAudits(ctx, batch))
				}
				b.ReportMetric(float64(rusage()-cpu0)/float64(b.N), "cpu-ns/op")
				reportServerCPU(b, eng.name, pg0)
			})
		}
	}
}

// reportServerCPU adds PostgreSQL's own CPU per op (pg-cpu-ns/op), which
// cpu-ns/op leaves out, to a benchmark on that engine.
func reportServerCPU(b *testing.B, engine string, since time.Duration) {
	if engine == "postgres" {
		b.ReportMetric(float64(pgtest.ServerCPU()-since)/float64(b.N), "pg-cpu-ns/op")
	}
}

// rusage is the process's CPU time so far, user and system.
func rusage() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSearchAuditStaged is a search by patient on SQLite while about
// as many rows are staged as there can be (32,000: 320 worklist pages), so
// the scan of audit_patients_staged is whole.
func BenchmarkSearchAuditStaged(b *testing.B) {
	ctx := context.Background()
	st := engines[0].open(b)
	sqlstore.SetAuditMoveAt(st, 1<<30)
	for i := 0; i < 320; i += 16 {
		var batch []*store.AuditRecord
		for j := i; j < i+16; j++ {
			r := &store.AuditRecord{Domain: "acme", Action: store.AuditActionExecute, Interaction: "search-type",
				Outcome: store.AuditOutcomeSuccess, Query: "ServiceRequest?_count"}
			for k := range 100 {
				r.PatientRefs = append(r.PatientRefs, "Patient/"+strconv.Itoa(100000+(j*100+k)%1200))
			}
			batch = append(batch, r)
		}
		require.NoError(b, st.RecordAudits(ctx, batch))
	}
	b.ReportAllocs()
	cpu0 := rusage()
	n := 0
	for b.Loop() {
		n++
		recs, _, err := st.SearchAudit(ctx, "acme", store.AuditFilter{PatientRef: "Patient/100042", Limit: 20})
		require.NoError(b, err)
		require.Len(b, recs, 20)
	}
	b.ReportMetric(float64(rusage()-cpu0)/float64(n), "cpu-ns/op")
}
