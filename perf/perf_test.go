package perf

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

func TestParseStatus(t *testing.T) {
	m, err := parseStatus([]byte("Name:\tx\nVmPeak:\t  9999 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nThreads:\t5\n"))
	require.NoError(t, err)
	assert.Equal(t, memory{rss: 1 << 20, hwm: 2 << 20}, m)

	_, err = parseStatus([]byte("Name:\tx\nVmRSS:\t1024 kB\n"))
	assert.Error(t, err, "VmHWM missing")
	_, err = parseStatus([]byte("VmHWM:\t1 MB\nVmRSS:\t1024 kB\n"))
	assert.Error(t, err, "a unit other than kB")
}

func TestOwnProcessFigures(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	_, err := cpuTime(os.Getpid())
	require.NoError(t, err)
	m, err := memoryOf(os.Getpid())
	require.NoError(t, err)
	assert.Positive(t, m.rss)
	assert.GreaterOrEqual(t, m.hwm, m.rss, "the peak is never below the current RSS")
}

func TestNextLink(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"link before entries", `{"resourceType":"Bundle","link":[{"relation":"self","url":"http://b/x"},{"relation":"next","url":"http://b/x?_cursor=a\u0026_count=100"}],"entry":[{"resource":{}}]}`, "http://b/x?_cursor=a&_count=100"},
		{"entries first", `{"resourceType":"Bundle","entry":[{"resource":{"link":[{"relation":"next","url":"wrong"}]}}],"link":[{"relation":"next","url":"right"}]}`, "right"},
		{"last page", `{"resourceType":"Bundle","link":[{"relation":"self","url":"http://b/x"}],"entry":[]}`, ""},
		{"no links", `{"resourceType":"Bundle"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := nextLink([]byte(tc.body))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
	_, err := nextLink([]byte(`[]`))
	assert.Error(t, err)
}

func TestNextToken(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"token", `{"items":[{"clinicalInfo":"\"nextToken\":\"x\""}],"nextToken":"abc"}`, "abc"},
		{"null", `{"items":[{"clinicalInfo":"nextToken"}],"nextToken":null}`, ""},
		{"absent", `{"items":[]}`, ""},
		{"empty", `{"items":[],"nextToken":""}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := nextToken([]byte(tc.body))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestQuantileAndMedian(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	assert.Equal(t, 50*time.Millisecond, quantile(d, 0.5))
	assert.Equal(t, 99*time.Millisecond, quantile(d, 0.99))
	assert.Equal(t, time.Duration(0), quantile(nil, 0.5))
	assert.Equal(t, 2.0, median([]float64{3, 1, 2}))
	assert.Equal(t, 2.5, median([]float64{4, 1, 2, 3}))
}

func TestDriveCountsEveryAnswerAndError(t *testing.T) {
	calls := 0
	res := drive(context.Background(), 1, 50*time.Millisecond, func(int) step {
		return func(context.Context) error {
			calls++
			time.Sleep(time.Millisecond)
			if calls%2 == 0 {
				return assert.AnError
			}
			return nil
		}
	})
	require.Positive(t, calls)
	assert.Equal(t, calls, res.requests+res.errors)
	assert.Len(t, res.lat, res.requests)
	assert.ErrorIs(t, res.firstErr, assert.AnError)
}

// The proxy adds the token QUBS wants, fetches it once, and otherwise
// passes requests and answers through unchanged.
func TestProxyForwardsWithItsToken(t *testing.T) {
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Appointments: 150})
	require.NoError(t, err)
	t.Cleanup(func() { sim.Close() })
	target, err := url.Parse(sim.URL)
	require.NoError(t, err)
	px := httptest.NewServer(NewProxy(context.Background(), target, sim.TokenURL(), qubssim.DefaultClientID, qubssim.DefaultClientSecret))
	t.Cleanup(px.Close)

	path := "/integrations/v1/acme/reporting/appointments/pending?pageSize=7"
	res, err := http.Get(sim.URL + path)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusUnauthorized, res.StatusCode, "QUBS refuses a request without a token")

	var pages int
	for u := px.URL + path; u != ""; pages++ {
		b, err := get(context.Background(), http.DefaultClient, u)
		require.NoError(t, err)
		var page struct{ Items []json.RawMessage }
		require.NoError(t, json.Unmarshal(b, &page))
		assert.LessOrEqual(t, len(page.Items), 7)
		tok, err := nextToken(b)
		require.NoError(t, err)
		u = ""
		if tok != "" {
			u = px.URL + path + "&nextToken=" + url.QueryEscape(tok)
		}
	}
	assert.Greater(t, pages, 2)
	assert.Len(t, sim.TokenRequests(), 1, "one token for the whole walk")
}

func TestMarkdownShowsFiguresRatiosAndGoals(t *testing.T) {
	rounds := func(rps float64, cpu time.Duration) []Round {
		return []Round{{Requests: 10, RPS: rps, P50: 10 * time.Millisecond, P99: 20 * time.Millisecond, CPU: cpu},
			{Requests: 10, RPS: rps * 3, P50: 10 * time.Millisecond, P99: 20 * time.Millisecond, CPU: cpu},
			{Requests: 10, RPS: rps / 3, P50: 10 * time.Millisecond, P99: 20 * time.Millisecond, CPU: cpu}}
	}
	r := &Results{
		Machine:  Machine{CPUs: 2, CPUModel: "Test CPU", GoVersion: "go1.x"},
		Config:   DefaultConfig(),
		Walk:     Walk{BridgePages: 10, BridgeQUBSCalls: 20, BridgeEntries: 1000, ProxyPages: 12, ProxyQUBSCalls: 12},
		Worklist: Comparison{Bridge: rounds(28, 33*time.Millisecond), Proxy: rounds(610, 400*time.Microsecond)},
		Read:     Comparison{Bridge: rounds(860, time.Millisecond), Proxy: rounds(3500, 200*time.Microsecond)},
		Reports: Reports{PayloadBytes: 2 << 20, RequestBytes: 2800000, Floor: []time.Duration{13 * time.Millisecond}, Flush: []time.Duration{7 * time.Millisecond},
			Minimal: []time.Duration{436 * time.Millisecond}, Full: []time.Duration{500 * time.Millisecond},
			BackToBack: []time.Duration{26 * time.Millisecond, 52 * time.Millisecond, 39 * time.Millisecond},
			Concurrent: make([]time.Duration, 8), EchoFull: 2700000, PeakSequential: 63 << 20, PeakConcurrent: 143 << 20, Delivered: true,
			HeapSequential: []int64{5 << 20, 2 << 20, 3 << 20}, HeapConcurrent: []int64{4 << 20, 5 << 20},
			First: []time.Duration{90 * time.Millisecond}, Warmup: []time.Duration{51 * time.Millisecond, 48 * time.Millisecond}},
	}
	var b bytes.Buffer
	r.WriteMarkdown(&b)
	out := b.String()
	for _, want := range []string{
		"2 × Test CPU", "| throughput | 28 req/s | 610 req/s | 0.05× |", "| CPU per page (own process) | 33.0 ms | 400 µs | 82.50× |",
		"| 2.00 | 1.00 |", "33.5× |", "31.5× payload", "71.5× payload",
		"| 1. worklist throughput, bridge/proxy | ≥ 0.5× | 0.05× | no |",
		"| POST latency, back to back, `return=minimal` (median of 3) | 39.0 ms | 13.0 ms (floor) | 3.00× |",
		"| 4. the same, back to back (the previous report's delivery beside it) | ≤ 3× | 3.0× | yes |",
		"| POST latency, `return=minimal`, against the floor + one flush of the payload to disk (information) | 436.0 ms | 13.0 ms + 7.0 ms | 21.80× |",
		"| 4. report POST latency, bridge/floor | ≤ 3× | 33.5× | no |", // the goal stays against the floor alone
		"floor 13.0 ms; flush 7.0 ms.",
		"(sequential, at once, heap) 90.0 ms, as", "warm-up after its first, in order, 51.0 ms, 48.0 ms.",
		"| heap per report: bytes allocated, POST to delivery, one at a time (median of 3; range) | 3.0 MiB (2.0 MiB–5.0 MiB) | — | 1.50× payload |",
		"| 4. peak heap per report (bytes allocated, POST to delivery), one at a time | ≤ 2× payload | 1.50× | yes |",
		"| 4. the same, 8 at once | ≤ 2× payload | 2.25× | no |", "| 5. read ServiceRequest/{id}, bridge/proxy | ≥ 0.7× | 0.25× | no |",
	} {
		assert.Contains(t, out, want)
	}
	assert.NotContains(t, out, "Warning")

	r.Reports.Flush = nil // a run from before the flush was measured
	b.Reset()
	r.WriteMarkdown(&b)
	assert.NotContains(t, b.String(), "one flush of the payload")
	assert.Equal(t, 3*4, strings.Count(out, "| worklist | ")+strings.Count(out, "| read | "), "every round of both sides is listed")
}

// TestCheckProfileDir: the profile directory is made when missing and
// refused when it holds anything, so that no earlier run's profiles are
// merged with this one's.
func TestCheckProfileDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "new", "profiles")
	require.NoError(t, checkProfileDir(dir))
	require.DirExists(t, dir)
	require.NoError(t, checkProfileDir(dir), "empty is fine")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "read-bridge-round1.cpu.pb.gz"), []byte{0x1f, 0x8b}, 0o644))
	err := checkProfileDir(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not empty")
}
