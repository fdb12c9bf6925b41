package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

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
			e := newEnv(b)
			h := e.srv.Config.Handler
			req := httptest.NewRequest(http.MethodGet, "/fhir/acme/ServiceRequest?"+tc.q, nil)
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
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
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer sim.Close()
	c, err := qubs.New(qubs.Config{BaseURL: sim.URL, TokenURL: sim.TokenURL(), ClientID: qubssim.DefaultClientID,
		ClientSecret: qubssim.DefaultClientSecret, AuthStyle: oauth2.AuthStyleInParams})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.ListPending(ctx, "acme", 100, ""); err != nil {
			b.Fatal(err)
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
