package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// BenchmarkSearch100 is a 100-entry ServiceRequest search through the real
// router, with QUBS (the simulator) over loopback HTTP.
func BenchmarkSearch100(b *testing.B) {
	for _, tc := range []struct{ name, q string }{
		{"plain", "_count=100"},
		{"include", "_count=100&_include=ServiceRequest:subject&_include=ServiceRequest:requester&_include=ServiceRequest:performer"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			// With a store, so that the audit is on, as in production.
			getLoop(b, newEnv(b, withStore(b), noKick()), "/fhir/acme/ServiceRequest?"+tc.q)
		})
	}
}

// searchLoop answers the same GET through the router for the benchmark.
func getLoop(b *testing.B, e *env, path string) {
	h := e.srv.Config.Handler
	req := httptest.NewRequest(http.MethodGet, path, nil)
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkReadServiceRequest is GET ServiceRequest/{id} through the real
// router, with QUBS (the simulator) over loopback HTTP.
func BenchmarkReadServiceRequest(b *testing.B) {
	e := newEnv(b)
	_, srID := firstPending(b, e.sim, 20)
	getLoop(b, e, "/fhir/acme/ServiceRequest/"+srID)
}

// BenchmarkQUBSGet is the QUBS call alone that BenchmarkReadServiceRequest
// makes.
func BenchmarkQUBSGet(b *testing.B) {
	sim, c := simClient(b)
	id := sim.PendingIDs("acme")[20]
	ctx := context.Background()
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := c.GetPending(ctx, "acme", id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBareProxy is the floor a thin layer is measured against: a bare
// httputil.ReverseProxy in front of the same simulator, adding only the
// QUBS bearer token, serving the QUBS page of 100 and the QUBS appointment
// that BenchmarkSearch100/plain and BenchmarkReadServiceRequest serve as
// FHIR. Compare ns/op in one run: throughput ratio = proxy ns/op / bridge
// ns/op.
func BenchmarkBareProxy(b *testing.B) {
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer sim.Close()
	cc := clientcredentials.Config{ClientID: qubssim.DefaultClientID, ClientSecret: qubssim.DefaultClientSecret,
		TokenURL: sim.TokenURL(), AuthStyle: oauth2.AuthStyleInParams}
	tok, err := cc.Token(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	target, err := url.Parse(sim.URL)
	if err != nil {
		b.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	}}
	id := sim.PendingIDs("acme")[20]
	for _, tc := range []struct{ name, path string }{
		{"page100", "/integrations/v1/acme/reporting/appointments/pending?pageSize=100"},
		{"read", "/integrations/v1/acme/reporting/appointments/" + id},
	} {
		b.Run(tc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, tc.path, nil)
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				rec := httptest.NewRecorder()
				proxy.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}

// BenchmarkQUBSPage100 is the QUBS call alone that BenchmarkSearch100 makes,
// so the bridge's own share of a search can be read off as a ratio.
func BenchmarkQUBSPage100(b *testing.B) {
	_, c := simClient(b)
	ctx := context.Background()
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := c.ListPending(ctx, "acme", 100, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// reportCPU reports the process's CPU time (user and system, all
// threads) per operation as cpu-µs/op, from its call to the returned
// function's. The simulator runs in the same process, so a figure is the
// bridge's (or the proxy's) cost plus the simulator's, which both pay
// alike: compare the two in one run. On a shared machine ns/op counts
// waiting for a core too; CPU time does not.
func reportCPU(b *testing.B) func() {
	start := processCPU()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64((processCPU()-start).Microseconds())/float64(b.N), "cpu-µs/op")
		}
	}
}

// samplePeak runs fn while sampling the live heap, and returns the highest
// HeapAlloc seen.
func samplePeak(fn func()) uint64 {
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			default:
			}
			// ReadMemStats stops the world briefly: good enough for a
			// figure, too costly for anything but a benchmark.
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}()
	fn()
	close(stop)
	<-done
	return peak.Load()
}

// simClient is a seeded simulator and a QUBS client of it, for the
// benchmarks that measure QUBS calls alone; both end with b.
func simClient(b *testing.B) (*qubssim.Server, *qubs.Client) {
	b.Helper()
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sim.Close() })
	c, err := qubs.New(qubs.Config{BaseURL: sim.URL, TokenURL: sim.TokenURL(), ClientID: qubssim.DefaultClientID,
		ClientSecret: qubssim.DefaultClientSecret, AuthStyle: oauth2.AuthStyleInParams})
	if err != nil {
		b.Fatal(err)
	}
	return sim, c
}
