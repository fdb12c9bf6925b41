package server_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// report2MB is a final DiagnosticReport carrying a PDF of exactly
// qubs.MaxUploadBytes (2.8 MB of base64), and that PDF. The PDF is padded
// with incompressible bytes, as a real one is mostly compressed streams:
// padded with spaces, it would let PostgreSQL compress 2 MiB into 24 KB,
// a saving no real report gets.
func report2MB(srID string) (body, file []byte) {
	file = pdf("benchmark")
	pad := make([]byte, qubs.MaxUploadBytes-len(file))
	_, _ = rand.NewChaCha8([32]byte{}).Read(pad) // never fails
	file = append(file, pad...)
	return report{srID: srID, status: "final", text: "Final report", pdfs: [][]byte{file}}.json(), file
}

// BenchmarkSubmitReport2MB posts a DiagnosticReport carrying a 2 MiB PDF
// through the router into a real SQLite store, and reports, besides B/op,
// the peak growth of the live heap while requests run (sampled every
// 50 µs; the GC runs before each round): sequential posts one at a time,
// concurrent-8 eight at once (peak-MiB/post is the round's peak over 8),
// each also on PostgreSQL (-postgres).
// ns/op is per post in both. latency is sequential without the sampler,
// whose stops of the world slow the requests it watches, and without the
// forced GC, which a server does not get between requests either: that
// is the figure to compare with BenchmarkReportFloor; latency-postgres the same
// on PostgreSQL, and latency-postgres-reserve with room for the artifact's
// chunks made beforehand, outside the timer, as serve makes it
// (BRIDGE_ARTIFACT_RESERVE). Both add cpu-ms/op, the process's CPU time per post (the
// simulator's answer to the pending check included, PostgreSQL's own work
// not), the steadier figure on a shared machine.
func BenchmarkSubmitReport2MB(b *testing.B) {
	for _, tc := range []struct {
		name   string
		conc   int
		sample bool
		store  func(testing.TB) envOption
	}{
		{"sequential", 1, true, withStore},
		{"concurrent-8", 8, true, withStore},
		{"latency", 1, false, withStore},
		{"sequential-postgres", 1, true, withPostgres},
		{"concurrent-8-postgres", 8, true, withPostgres},
		{"latency-postgres", 1, false, withPostgres},
		{"latency-postgres-reserve", 1, false, withPostgres},
	} {
		name, conc := tc.name, tc.conc
		b.Run(name, func(b *testing.B) {
			var reserve store.ArtifactReserver
			e := newEnv(b, tc.store(b), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
				sc.Kick = func() {} // measure the request, not the delivery behind it
				if strings.HasSuffix(name, "-reserve") {
					reserve = sc.Store.(store.ArtifactReserver)
				}
			})
			_, srID := firstPending(b, e.sim, 20)
			body, _ := report2MB(srID)
			h := e.srv.Config.Handler
			var (
				peak uint64
				n    atomic.Int64
				cpu  time.Duration
			)
			post := func() {
				req := httptest.NewRequest(http.MethodPost, "/fhir/acme/DiagnosticReport", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/fhir+json")
				req.Header.Set("Idempotency-Key", "bench-"+strconv.FormatInt(n.Add(1), 10))
				req.Header.Set("Prefer", "return=minimal")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusCreated {
					b.Errorf("status %d: %s", rec.Code, rec.Body)
				}
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for i := 0; i < b.N; i += conc {
				b.StopTimer()
				if reserve != nil {
					// As serve's background loop does (cmd's
					// keepArtifactReserve), outside the timer.
					if _, err := reserve.ReserveArtifactSpace(context.Background(), 16<<20); err != nil {
						b.Fatal(err)
					}
				}
				var base uint64
				if tc.sample {
					runtime.GC()
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					base = ms.HeapAlloc
				}
				b.StartTimer()
				round := func() {
					var wg sync.WaitGroup
					for range min(conc, b.N-i) {
						wg.Add(1)
						go func() { defer wg.Done(); post() }()
					}
					wg.Wait()
				}
				if !tc.sample {
					c0 := processCPU()
					round()
					cpu += processCPU() - c0
					continue
				}
				p := samplePeak(round)
				if p > base && p-base > peak {
					peak = p - base
				}
			}
			if !tc.sample {
				b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
				return
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-MiB/op")
			b.ReportMetric(float64(peak)/(1<<20)/float64(min(conc, b.N)), "peak-MiB/post")
		})
	}
}

// BenchmarkReportFloor is the least any bridge can spend on the report of
// BenchmarkSubmitReport2MB: the QUBS calls alone, straight through
// qubs.Client against the simulator over loopback (an upload URL, the PUT
// of the 2 MiB PDF, the report submission). The bridge's POST divided by
// this is the cost of the layer.
func BenchmarkReportFloor(b *testing.B) {
	sim, c := simClient(b)
	appt, _ := firstPending(b, sim, 20)
	_, file := report2MB("x")
	ctx := context.Background()
	ct := qubs.ContentTypePDF
	sub := qubs.ReportSubmission{ReportText: "Final report", ReportStatus: qubs.ReportFinal}
	b.ReportAllocs()
	b.SetBytes(int64(len(file)))
	i := 0
	for b.Loop() {
		i++
		key := "floor-" + strconv.Itoa(i)
		urls, err := c.CreateUploadURLs(ctx, "acme", appt.AppointmentID,
			qubs.UploadRequest{Items: []qubs.UploadItem{{FileName: "report.pdf", ContentType: &ct}}}, key)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Upload(ctx, urls.Items[0], ct, int64(len(file)), bytes.NewReader(file)); err != nil {
			b.Fatal(err)
		}
		if _, err := c.SubmitReport(ctx, "acme", appt.AppointmentID, sub, key+"-report"); err != nil {
			b.Fatal(err)
		}
	}
}
