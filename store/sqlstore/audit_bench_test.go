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
// 16). cpu-ns/op is the process's CPU per record, goroutines/op the
// goroutines started per record; on PostgreSQL, pg-cpu-ns/op is the
// server's.
func BenchmarkRecordAudits(b *testing.B) {
	// step is how far the first patient of record i+1 is from record
	// i's: a page (100) makes 12 distinct pages, 7 a new one each time
	// for 1,200 records.
	rec := func(i, patients, step int) *store.AuditRecord {
		r := &store.AuditRecord{Domain: "acme", Action: store.AuditActionRead, Interaction: "read",
			Outcome: store.AuditOutcomeSuccess, CorrelationID: "bench-" + strconv.Itoa(i),
			RequestPath: "/fhir/:domain/ServiceRequest/:id", NetworkAddr: "127.0.0.1"}
		if patients > 1 {
			r.Action, r.Interaction, r.Query = store.AuditActionExecute, "search-type", "ServiceRequest?_count"
			r.RequestPath = "/fhir/:domain/ServiceRequest"
		}
		first := i * step % 1200
		for j := range patients {
			p := strconv.Itoa(100000 + (first+j)%1200)
			r.EntityRefs = append(r.EntityRefs, "ServiceRequest/A"+p)
			r.PatientRefs = append(r.PatientRefs, "Patient/"+p)
		}
		return r
	}
	cases := []struct {
		name                  string
		patients, batch, step int
	}{
		{"read/batch=1", 1, 1, 1},
		{"read/batch=4", 1, 4, 1},
		{"read/batch=16", 1, 16, 1},
		{"read/batch=64", 1, 64, 1},
		{"read/batch=128", 1, 128, 1},
		{"read/batch=256", 1, 256, 1},
		{"page/batch=4", 100, 4, 100},
		{"page/batch=16", 100, 16, 100},
		{"page/batch=64", 100, 64, 100},
		{"page/batch=256", 100, 256, 100},
		// Every page a new set: the worklist changing between reads.
		{"newpage/batch=16", 100, 16, 7},
	}
	for _, eng := range engines {
		for _, tc := range cases {
			b.Run(eng.name+"/"+tc.name, func(b *testing.B) {
				// A context with a deadline, as the audit writer's attempts
				// have: what a statement costs depends on it (insertAudits).
				ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
				defer cancel()
				st := eng.open(b)
				b.ReportAllocs()
				cpu0, pg0, g0 := rusage(), pgtest.ServerCPU(), goroutinesCreated()
				for i := 0; i < b.N; i += tc.batch {
					batch := make([]*store.AuditRecord, 0, tc.batch)
					for j := i; j < min(i+tc.batch, b.N); j++ {
						batch = append(batch, rec(j, tc.patients, tc.step))
					}
					require.NoError(b, st.RecordAudits(ctx, batch))
				}
				b.ReportMetric(float64(rusage()-cpu0)/float64(b.N), "cpu-ns/op")
				b.ReportMetric(float64(goroutinesCreated()-g0)/float64(b.N), "goroutines/op")
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

// BenchmarkSearchAuditByPatient is a search by patient (the newest 20 of
// its records) over 320 worklist page records naming 100 of 1,200
// patients each: "repeated" as a walk of the same pages writes them (12
// distinct pages, so the patient is in one set of 27 records), "shifting"
// as if the worklist changed between every two pages (every record its
// own set, the patient in 27 of them). The search reads every record of
// the patient's sets and keeps the newest (docs/audit.md).
func BenchmarkSearchAuditByPatient(b *testing.B) {
	for _, eng := range engines {
		for _, shift := range []int{100, 7} {
			name := map[int]string{100: "repeated", 7: "shifting"}[shift]
			b.Run(eng.name+"/"+name, func(b *testing.B) {
				ctx := context.Background()
				st := eng.open(b)
				for i := 0; i < 320; i += 16 {
					var batch []*store.AuditRecord
					for j := i; j < i+16; j++ {
						r := &store.AuditRecord{Domain: "acme", Action: store.AuditActionExecute, Interaction: "search-type",
							Outcome: store.AuditOutcomeSuccess, Query: "ServiceRequest?_count"}
						for k := range 100 {
							r.PatientRefs = append(r.PatientRefs, "Patient/"+strconv.Itoa(100000+(j*shift+k)%1200))
						}
						batch = append(batch, r)
					}
					require.NoError(b, st.RecordAudits(ctx, batch))
				}
				b.ReportAllocs()
				cpu0, pg0 := rusage(), pgtest.ServerCPU()
				for b.Loop() {
					recs, _, err := st.SearchAudit(ctx, "acme", store.AuditFilter{PatientRef: "Patient/100042", Limit: 20})
					require.NoError(b, err)
					require.Len(b, recs, 20)
				}
				b.ReportMetric(float64(rusage()-cpu0)/float64(b.N), "cpu-ns/op")
				reportServerCPU(b, eng.name, pg0)
			})
		}
	}
}
