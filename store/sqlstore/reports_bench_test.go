package sqlstore_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
)

// BenchmarkCreateReport2MB is the store's part of a DiagnosticReport POST
// carrying a 2 MiB PDF (server's BenchmarkSubmitReport2MB): CreateReport
// with one artifact of incompressible bytes and the write's audit record,
// one report at a time, each to a new appointment. On PostgreSQL,
// pg-cpu-ns/op is the server's CPU per report (every backend's, the
// WAL writer's included), which ns/op waits for and cpu-ns/op leaves out.
// postgres-reserve is postgres with room for the chunks made ahead of time,
// as serve's background loop makes it (ReserveArtifactSpace, topping up
// 16 MiB outside the timer); postgres grows the table as it goes.
func BenchmarkCreateReport2MB(b *testing.B) {
	pdf := pdf2MB()
	cases := []struct {
		name    string
		open    func(b *testing.B) *sqlstore.Store
		reserve int64
	}{{engines[0].name, engines[0].open, 0}, {engines[1].name, engines[1].open, 0}, {"postgres-reserve", engines[1].open, 16 << 20}}
	for _, tc := range cases {
		eng, reserve := tc, tc.reserve // per case
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			st := eng.open(b)
			b.ReportAllocs()
			b.SetBytes(int64(len(pdf)))
			cpu0, pg0 := rusage(), pgtest.ServerCPU()
			i := 0
			for b.Loop() {
				if reserve > 0 {
					b.StopTimer()
					_, err := st.ReserveArtifactSpace(ctx, reserve)
					require.NoError(b, err)
					b.StartTimer()
				}
				i++
				id := "r" + strconv.Itoa(i)
				r := report2MB(id, "A"+strconv.Itoa(i), pdf)
				r.Audit = &store.AuditRecord{Domain: "acme", Action: store.AuditActionCreate, Interaction: "create",
					Outcome: store.AuditOutcomeSuccess, CorrelationID: "bench-" + id, RequestPath: "/fhir/:domain/DiagnosticReport",
					EntityRefs: []string{"DiagnosticReport/" + id}, PatientRefs: []string{"Patient/1"}}
				require.NoError(b, st.CreateReport(ctx, r))
			}
			b.ReportMetric(float64(rusage()-cpu0)/float64(b.N), "cpu-ns/op")
			// Not with the reserve: its top-ups' CPU would count.
			reportServerCPU(b, tc.name, pg0)
		})
	}
}

// BenchmarkReportArtifact2MB reads back the 2 MiB artifact of
// BenchmarkCreateReport2MB, as a delivery (ClaimDelivery) and a Binary
// read (ArtifactBinary) do: B/op is what the bridge allocates for it, and
// pg-cpu-ns/op, on PostgreSQL, the server's CPU per read.
func BenchmarkReportArtifact2MB(b *testing.B) {
	pdf := pdf2MB()
	for _, eng := range engines {
		b.Run(eng.name, func(b *testing.B) {
			ctx := context.Background()
			st := eng.open(b)
			require.NoError(b, st.CreateReport(ctx, report2MB("r1", "A1", pdf)))
			b.ReportAllocs()
			b.SetBytes(int64(len(pdf)))
			cpu0, pg0 := rusage(), pgtest.ServerCPU()
			for b.Loop() {
				a, err := st.ReportArtifact(ctx, "acme", "r1", 1, 0)
				require.NoError(b, err)
				require.Len(b, a.Data, len(pdf))
			}
			b.ReportMetric(float64(rusage()-cpu0)/float64(b.N), "cpu-ns/op")
			reportServerCPU(b, eng.name, pg0)
		})
	}
}

// pdf2MB stands for a 2 MiB PDF: incompressible bytes.
func pdf2MB() []byte {
	pdf := make([]byte, 2<<20)
	_, _ = rand.NewChaCha8([32]byte{}).Read(pdf) // never fails
	return pdf
}

// report2MB is a final report carrying pdf as its one artifact.
func report2MB(id, appointmentID string, pdf []byte) *store.Report {
	return &store.Report{Domain: "acme", ID: id, AppointmentID: appointmentID, Status: "final",
		Resource: []byte(`{"resourceType":"DiagnosticReport"}`), Submission: []byte(`{}`), CreatedAt: time.Now(),
		Artifacts: []store.Artifact{{FileName: "report.pdf", ContentType: "application/pdf", Data: pdf, BinaryID: "dra-" + id}}}
}

// BenchmarkClaimDelivery2MB is a delivery worker's claim of a version
// carrying a 2 MiB PDF: "read" reads the bytes back from the store, as a
// claim did before delivery.Held and still does for a version this
// process did not just store; "held" is given them, as a delivery.Held
// the version was put in when it was accepted gives them. cpu-ns/op and, on
// PostgreSQL, pg-cpu-ns/op are the bridge's and the server's CPU per
// claim; B/op is what the bridge allocates for it.
func BenchmarkClaimDelivery2MB(b *testing.B) {
	pdf := pdf2MB()
	for _, eng := range engines {
		for _, mode := range []string{"read", "held"} {
			b.Run(eng.name+"/"+mode, func(b *testing.B) {
				ctx := context.Background()
				st := eng.open(b)
				b.ReportAllocs()
				b.SetBytes(int64(len(pdf)))
				var cpu, pgCPU time.Duration
				for i := range b.N {
					b.StopTimer()
					id := "r" + strconv.Itoa(i)
					r := report2MB(id, "A"+strconv.Itoa(i), pdf)
					require.NoError(b, st.CreateReport(ctx, r))
					var held store.Held
					if mode == "held" {
						held = func(string, string, int, *store.Artifact) []byte { return pdf }
					}
					// The create's garbage is collected now, not on the
					// claim's CPU.
					runtime.GC()
					// Reading the server's CPU costs this process more than
					// a claim: it is read outside the process's reading.
					pg0 := pgtest.ServerCPU()
					cpu0 := rusage()
					b.StartTimer()
					job, err := st.ClaimDelivery(ctx, "w", time.Minute, time.Now().Add(time.Second), held)
					b.StopTimer()
					cpu += rusage() - cpu0
					pgCPU += pgtest.ServerCPU() - pg0
					require.NoError(b, err)
					require.Equal(b, id, job.ID)
					require.Len(b, job.Artifacts[0].Data, len(pdf))
				}
				b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
				if eng.name == "postgres" {
					b.ReportMetric(float64(pgCPU)/float64(b.N), "pg-cpu-ns/op")
				}
			})
		}
	}
}
