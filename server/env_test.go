package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/worklist"
)

// env is the bridge in front of the simulator, both over real loopback HTTP.
type env struct {
	sim  *qubssim.Server
	srv  *httptest.Server
	base string // FHIR base of the first domain
	// bridge is the server under test, for tests that stop it.
	bridge *server.Server
}

type envOption func(*qubssim.Options, *qubs.Config, *server.Config)

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	so := qubssim.Options{Seed: 1}
	qc := qubs.Config{
		ClientID:     qubssim.DefaultClientID,
		ClientSecret: qubssim.DefaultClientSecret,
		AuthStyle:    oauth2.AuthStyleInParams,
		// Retries stay on but fast, so fault tests do not wait seconds.
		Retry: qubs.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond},
	}
	logs := &logBuffer{}
	sc := server.Config{
		CursorKey: []byte("test cursor key"), Version: "test",
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		o(&so, &qc, &sc)
	}
	sim, err := qubssim.Start("127.0.0.1:0", so)
	require.NoError(t, err)
	if sc.Zones == nil {
		var sites []string
		for site, zone := range sim.SiteTimeZones() {
			sites = append(sites, site+"="+zone)
		}
		sc.Zones, err = mapping.NewZones("Australia/Sydney", strings.Join(sites, ";"))
		require.NoError(t, err)
	}
	t.Cleanup(func() { sim.Close() })
	// Registered before the servers close, so it runs after they have.
	t.Cleanup(func() { assertNoPHI(t, logs.String(), sim) })
	qc.BaseURL, qc.TokenURL = sim.URL, sim.TokenURL()
	client, err := qubs.New(qc)
	require.NoError(t, err)
	sc.QUBS = client
	if sy, ok := sc.Worklist.(*worklist.Syncer); ok {
		// The index reads the simulator through the bridge's own client.
		sy.QUBS, sy.Zones = client, sc.Zones
	}
	if sc.Store != nil && sc.Kick == nil {
		startWorker(t, sc.Store, client, &sc)
	}
	bridge := server.New(sc)
	// Registered before the HTTP server's, so it runs after: the audit
	// writer flushes once no request can come, before the store closes.
	t.Cleanup(func() { require.NoError(t, bridge.Close(context.Background())) })
	srv := httptest.NewServer(bridge)
	t.Cleanup(srv.Close)
	return &env{sim: sim, srv: srv, base: srv.URL + "/fhir/" + sim.Domains()[0], bridge: bridge}
}

// response is an answer of the bridge, already checked to be valid R4 when
// it is FHIR JSON.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

// do sends a request and, for every FHIR JSON answer, runs the one strict
// R4 check shared by all end-to-end tests.
func do(t testing.TB, method, u string, header http.Header, body io.Reader) *response {
	t.Helper()
	res, b := send(t, method, u, header, body)
	ct := res.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "application/fhir+json") || strings.HasPrefix(ct, "application/json") && strings.Contains(u, "/fhir/") && !strings.Contains(u, "/.well-known/") {
		fhirtest.RequireValidR4(t, b)
	}
	return &response{status: res.StatusCode, header: res.Header, body: b}
}

// send sends a request and returns the answer with its body read.
func send(t testing.TB, method, u string, header http.Header, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	require.NoError(t, err)
	for k, vs := range header {
		req.Header[k] = vs
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, b
}

func get(t testing.TB, u string) *response {
	t.Helper()
	return do(t, http.MethodGet, u, nil, nil)
}

// outcome returns the diagnostics of an OperationOutcome, joined.
func outcome(t testing.TB, r *response) string {
	t.Helper()
	m := r.json(t)
	require.Equal(t, "OperationOutcome", m["resourceType"], "body: %s", r.body)
	var diags []string
	for _, is := range m["issue"].([]any) {
		d, _ := is.(map[string]any)["diagnostics"].(string)
		diags = append(diags, d)
	}
	return strings.Join(diags, " | ")
}

// link returns the Bundle link with the relation, "" when absent.
func link(b map[string]any, rel string) string {
	links, _ := b["link"].([]any)
	for _, l := range links {
		lm := l.(map[string]any)
		if lm["relation"] == rel {
			return lm["url"].(string)
		}
	}
	return ""
}

// entries returns the Bundle's entries with the given search mode.
func entries(b map[string]any, mode string) []map[string]any {
	var out []map[string]any
	es, _ := b["entry"].([]any)
	for _, e := range es {
		em := e.(map[string]any)
		if s, _ := em["search"].(map[string]any); s != nil && s["mode"] == mode {
			out = append(out, em)
		}
	}
	return out
}

func resourceOf(e map[string]any) map[string]any { return e["resource"].(map[string]any) }

func query(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v.Encode()
}
