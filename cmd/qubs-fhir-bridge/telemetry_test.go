package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// TestDemoServesMetrics: the demo serves /metrics on a loopback port of
// its own, prints it, and counts what it answered.
func TestDemoServesMetrics(t *testing.T) {
	t.Parallel()
	m, out, _ := start(t, nil, "demo", "--listen", "127.0.0.1:0", "--sim-listen", "127.0.0.1:0")
	require.NotEmpty(t, m.MetricsURL)
	assert.True(t, strings.HasPrefix(m.MetricsURL, "http://127.0.0.1:"), m.MetricsURL)
	assert.Contains(t, out.String(), m.MetricsURL, "the demo prints where its metrics are")
	status, _ := fetch(t, m.BridgeURL+"/fhir/acme/ServiceRequest?_count=5")
	require.Equal(t, http.StatusOK, status)
	// The request is counted once its handler returns, which can be after
	// the client has read the whole answer (a body larger than the
	// server's buffer goes out as it is written): scrape until it is.
	const counted = `bridge_http_requests_total{code="2xx",method="GET",route="/fhir/:domain/ServiceRequest"} 1`
	var text string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		status, body := fetch(t, m.MetricsURL)
		require.Equal(t, http.StatusOK, status)
		if text = string(body); strings.Contains(text, counted) || time.Now().After(deadline) {
			break
		}
	}
	assert.Contains(t, text, counted, "the search is counted")
	assert.Contains(t, text, `bridge_qubs_token_fetches_total{result="ok"} 1`)
	assert.Contains(t, text, "go_goroutines ")
	assert.Contains(t, text, "process_resident_memory_bytes ")
	status, _ = fetch(t, m.BridgeURL+"/metrics")
	assert.Equal(t, http.StatusNotFound, status, "metrics are not on the FHIR listener")
}

// serveEnv is serve's environment against a simulator.
func serveEnv(t *testing.T, extra map[string]string) map[string]string {
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Appointments: 20})
	require.NoError(t, err)
	t.Cleanup(func() { sim.Close() })
	env := map[string]string{
		"QUBS_API_URL": sim.URL, "QUBS_TOKEN_URL": sim.TokenURL(),
		"QUBS_CLIENT_ID": qubssim.DefaultClientID, "QUBS_CLIENT_SECRET": qubssim.DefaultClientSecret,
		"BRIDGE_LISTEN": "127.0.0.1:0", "BRIDGE_STORE": "sqlite:" + t.TempDir() + "/b.db",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func TestServeMetrics(t *testing.T) {
	t.Parallel()
	t.Run("off by default", func(t *testing.T) {
		t.Parallel()
		m, _, _ := start(t, serveEnv(t, nil), "serve")
		assert.Empty(t, m.MetricsURL)
	})
	t.Run("on BRIDGE_METRICS_LISTEN", func(t *testing.T) {
		t.Parallel()
		m, _, _ := start(t, serveEnv(t, map[string]string{"BRIDGE_METRICS_LISTEN": "127.0.0.1:0"}), "serve")
		require.NotEmpty(t, m.MetricsURL)
		status, body := fetch(t, m.MetricsURL)
		require.Equal(t, http.StatusOK, status)
		assert.Contains(t, string(body), "bridge_build_info{goversion=")
	})
	t.Run("pprof on BRIDGE_PPROF=on", func(t *testing.T) {
		t.Parallel()
		m, _, errOut := start(t, serveEnv(t, map[string]string{"BRIDGE_METRICS_LISTEN": "127.0.0.1:0", "BRIDGE_PPROF": "on"}), "serve")
		base := strings.TrimSuffix(m.MetricsURL, "/metrics")
		status, body := fetch(t, base+"/debug/pprof/heap?debug=1")
		require.Equal(t, http.StatusOK, status)
		assert.Contains(t, string(body), "heap profile:")
		status, body = fetch(t, base+"/debug/pprof/goroutine?debug=1")
		require.Equal(t, http.StatusOK, status)
		assert.Contains(t, string(body), "goroutine profile:")
		status, body = fetch(t, base+"/debug/pprof/profile?seconds=1")
		require.Equal(t, http.StatusOK, status)
		assert.NotEmpty(t, body, "a CPU profile")
		status, _ = fetch(t, base+"/debug/pprof/cmdline")
		assert.Equal(t, http.StatusNotFound, status, "the command line can carry a secret")
		status, _ = fetch(t, m.BridgeURL+"/debug/pprof/heap")
		assert.Equal(t, http.StatusNotFound, status, "never on the FHIR listener")
		assert.Contains(t, errOut.String(), `"msg":"serving metrics"`)
		assert.Contains(t, errOut.String(), `"pprof":true`)
	})
	t.Run("no pprof by default", func(t *testing.T) {
		t.Parallel()
		m, _, _ := start(t, serveEnv(t, map[string]string{"BRIDGE_METRICS_LISTEN": "127.0.0.1:0"}), "serve")
		status, _ := fetch(t, strings.TrimSuffix(m.MetricsURL, "/metrics")+"/debug/pprof/heap")
		assert.Equal(t, http.StatusNotFound, status)
	})
	for name, tc := range map[string]struct{ env map[string]string }{
		"pprof without a metrics listener": {map[string]string{"BRIDGE_PPROF": "on"}},
		"pprof neither on nor off":         {map[string]string{"BRIDGE_PPROF": "yes", "BRIDGE_METRICS_LISTEN": "127.0.0.1:0"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := &Main{Stdout: &syncBuffer{}, Stderr: &syncBuffer{}, Getenv: envFrom(serveEnv(t, tc.env)), Ready: make(chan struct{})}
			err := m.Run(context.Background(), []string{"serve"})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "BRIDGE_PPROF")
		})
	}
	t.Run("busy port", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		m := &Main{Stdout: &syncBuffer{}, Stderr: &syncBuffer{}, Getenv: envFrom(serveEnv(t, map[string]string{"BRIDGE_METRICS_LISTEN": ln.Addr().String()})), Ready: make(chan struct{})}
		err = m.Run(context.Background(), []string{"serve"})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "BRIDGE_METRICS_LISTEN")
	})
	t.Run("unsupported OTLP protocol", func(t *testing.T) {
		t.Parallel()
		m := &Main{Stdout: &syncBuffer{}, Stderr: &syncBuffer{}, Getenv: envFrom(serveEnv(t, map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})), Ready: make(chan struct{})}
		err := m.Run(context.Background(), []string{"serve"})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "http/protobuf")
	})
}

// TestServeExportsTraces: with OTEL_EXPORTER_OTLP_ENDPOINT set, serve sends
// its spans over OTLP/HTTP, and flushes the last ones when it stops. Not
// parallel: the exporter reads the process environment.
func TestServeExportsTraces(t *testing.T) {
	var mu sync.Mutex
	var got []string
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	env := serveEnv(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL})
	m := &Main{Stdout: &syncBuffer{}, Stderr: &syncBuffer{}, Getenv: envFrom(env), Ready: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, []string{"serve"}) }()
	select {
	case <-m.Ready:
	case err := <-done:
		t.Fatalf("serve stopped early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not become ready")
	}
	status, _ := fetch(t, m.BridgeURL+"/fhir/acme/ServiceRequest?_count=2")
	require.Equal(t, http.StatusOK, status)
	cancel()
	require.NoError(t, <-done)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, got, "spans were exported")
	assert.Equal(t, "POST /v1/traces application/x-protobuf", got[0])
}
