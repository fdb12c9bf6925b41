package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
)

// syncBuffer is written by the program's goroutine and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func envFrom(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

// start runs the program with args until the test ends.
func start(t *testing.T, env map[string]string, args ...string) (*Main, *syncBuffer, *syncBuffer) {
	t.Helper()
	out, errOut := &syncBuffer{}, &syncBuffer{}
	m := &Main{Stdout: out, Stderr: errOut, Getenv: envFrom(env), Ready: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "the program must stop cleanly")
		case <-time.After(30 * time.Second):
			t.Error("the program did not stop")
		}
	})
	select {
	case <-m.Ready:
	case err := <-done:
		t.Fatalf("the program stopped early: %v\n%s", err, errOut.String())
	case <-time.After(30 * time.Second):
		t.Fatal("the program did not become ready")
	}
	return m, out, errOut
}

func fetch(t *testing.T, url string) (int, []byte) {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, b
}

func TestDemoServesAPageableWorklist(t *testing.T) {
	t.Parallel()
	m, out, _ := start(t, nil, "demo", "--listen", "127.0.0.1:0", "--sim-listen", "127.0.0.1:0")
	base := m.BridgeURL + "/fhir/acme"
	assert.Contains(t, out.String(), base, "the demo prints its FHIR base")
	assert.Contains(t, out.String(), "curl", "and a request to paste")

	status, body := fetch(t, base+"/metadata")
	require.Equal(t, http.StatusOK, status)
	fhirtest.RequireValidR4(t, body)

	// The README's walk by next links, as fast as a loop can: the demo
	// never throttles (TestRateLimitDefaults: its limit is off).
	// The first and the last page are validated: the pages between come
	// from the same code, and validating each of twenty cost half the
	// test's time under -race.
	next, seen := base+"/ServiceRequest?_count=50&_include=ServiceRequest:subject", 0
	for page := 0; next != ""; page++ {
		status, body := fetch(t, next)
		require.Equal(t, http.StatusOK, status, "%s", body)
		var b struct {
			Link  []struct{ Relation, URL string }
			Entry []json.RawMessage
		}
		require.NoError(t, json.Unmarshal(body, &b))
		seen += len(b.Entry)
		next = ""
		for _, l := range b.Link {
			if l.Relation == "next" {
				next = l.URL
			}
		}
		if page == 0 || next == "" {
			fhirtest.RequireValidR4(t, body)
		}
	}
	assert.GreaterOrEqual(t, seen, 1000)

	status, _ = fetch(t, m.BridgeURL+"/readyz")
	assert.Equal(t, http.StatusOK, status)
}

func TestSimulatorAlone(t *testing.T) {
	t.Parallel()
	m, out, _ := start(t, map[string]string{"QUBS_SIM_APPOINTMENTS": "20"}, "qubs-sim", "--listen", "127.0.0.1:0")
	assert.Contains(t, out.String(), m.SimURL)
	res, err := http.PostForm(m.SimURL+"/oauth2/token", map[string][]string{
		"grant_type": {"client_credentials"}, "client_id": {qubssim.DefaultClientID}, "client_secret": {qubssim.DefaultClientSecret},
	})
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
}

// TestSimulatorChurnFlag: --churn sets the simulator's rate, which its
// admin API reports; a bad rate stops the command.
func TestSimulatorChurnFlag(t *testing.T) {
	t.Parallel()
	m, out, _ := start(t, map[string]string{"QUBS_SIM_APPOINTMENTS": "20"}, "qubs-sim", "--listen", "127.0.0.1:0", "--churn", "120/m")
	assert.Contains(t, out.String(), "/_sim/churn (rate 120/m")
	res, err := http.Get(m.SimURL + "/_sim/churn")
	require.NoError(t, err)
	var st qubssim.ChurnStats
	require.NoError(t, json.NewDecoder(res.Body).Decode(&st))
	res.Body.Close()
	assert.InDelta(t, 2.0, st.Rate, 1e-9)

	bad := &Main{Stdout: io.Discard, Stderr: io.Discard, Getenv: envFrom(map[string]string{"QUBS_SIM_CHURN": "fast"}), Ready: make(chan struct{})}
	err = bad.Run(context.Background(), []string{"qubs-sim", "--listen", "127.0.0.1:0"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "QUBS_SIM_CHURN")
}

func TestServeAgainstSimulator(t *testing.T) {
	t.Parallel()
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Appointments: 50})
	require.NoError(t, err)
	t.Cleanup(func() { sim.Close() })
	m, _, logs := start(t, map[string]string{
		"QUBS_API_URL":       sim.URL,
		"QUBS_TOKEN_URL":     sim.TokenURL(),
		"QUBS_CLIENT_ID":     qubssim.DefaultClientID,
		"QUBS_CLIENT_SECRET": qubssim.DefaultClientSecret,
		"BRIDGE_LISTEN":      "127.0.0.1:0",
		"BRIDGE_STORE":       "sqlite:" + t.TempDir() + "/bridge.db",
	}, "serve")
	status, body := fetch(t, m.BridgeURL+"/fhir/acme/ServiceRequest?_count=5")
	require.Equal(t, http.StatusOK, status, "%s", body)
	fhirtest.RequireValidR4(t, body)
	assert.NotContains(t, logs.String(), qubssim.DefaultClientSecret, "the effective configuration is logged with secrets redacted")
	assert.Contains(t, logs.String(), "[redacted]")
}

func TestStartupRefusals(t *testing.T) {
	t.Parallel()
	base := map[string]string{"QUBS_CLIENT_ID": "id", "QUBS_CLIENT_SECRET": "s", "BRIDGE_LISTEN": "127.0.0.1:0",
		"BRIDGE_STORE": "sqlite:" + t.TempDir() + "/refusals.db"}
	with := func(kv ...string) map[string]string { return overlay(base, kv...) }
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"auth none off loopback", with("BRIDGE_LISTEN", "0.0.0.0:0"), []string{"serve"}, "loopback"},
		{"unknown auth", with("BRIDGE_AUTH", "magic"), []string{"serve"}, "BRIDGE_AUTH"},
		{"static without file", with("BRIDGE_AUTH", "static"), []string{"serve"}, "BRIDGE_STATIC_TOKENS_FILE"},
		{"jwt without issuer", with("BRIDGE_AUTH", "jwt", "BRIDGE_JWT_JWKS_URL", "https://as.example/jwks"), []string{"serve"}, "BRIDGE_JWT"},
		{"smart without public url", with("BRIDGE_AUTH", "smart"), []string{"serve"}, "BRIDGE_PUBLIC_URL"},
		{"bad trusted proxy", with("BRIDGE_TRUSTED_PROXIES", "not-an-ip"), []string{"serve"}, "BRIDGE_TRUSTED_PROXIES"},
		{"missing credentials", with("QUBS_CLIENT_SECRET", ""), []string{"serve"}, "QUBS_CLIENT_ID"},
		{"bad store", with("BRIDGE_STORE", "mysql://x"), []string{"serve"}, "BRIDGE_STORE"},
		{"bad zone", with("BRIDGE_DEFAULT_TIMEZONE", "Mars/Olympus"), []string{"serve"}, "zone"},
		{"bad public url", with("BRIDGE_PUBLIC_URL", "example.org"), []string{"serve"}, "BRIDGE_PUBLIC_URL"},
		{"flag wins over env", with("BRIDGE_LISTEN", "127.0.0.1:0"), []string{"serve", "--listen", "0.0.0.0:0"}, "loopback"},
		{"secret file missing", with("QUBS_CLIENT_SECRET", "", "QUBS_CLIENT_SECRET_FILE", "/nonexistent/secret"), []string{"serve"}, "QUBS_CLIENT_SECRET_FILE"},
		{"demo off loopback", nil, []string{"demo", "--listen", "0.0.0.0:0"}, "loopback"},
		{"cert without key", with("BRIDGE_TLS_CERT", "/x.pem"), []string{"serve"}, "go together"},
		{"unreadable cert", with("BRIDGE_TLS_CERT", "/nonexistent.pem", "BRIDGE_TLS_KEY", "/nonexistent.key"), []string{"serve"}, "BRIDGE_TLS_CERT"},
		{"bad retention", with("BRIDGE_RETENTION", "forever"), []string{"serve"}, "BRIDGE_RETENTION"},
		{"bad rate limit", with("BRIDGE_RATE_LIMIT", "fast"), []string{"serve"}, "BRIDGE_RATE_LIMIT"},
		{"bad comment poll rate", with("BRIDGE_COMMENT_POLL_RATE", "0"), []string{"serve"}, "BRIDGE_COMMENT_POLL_RATE"},
		{"delivery lease too short", with("BRIDGE_DELIVERY_LEASE", "5s"), []string{"serve"}, "BRIDGE_DELIVERY_LEASE"},
		{"delivery lease not a duration", with("BRIDGE_DELIVERY_LEASE", "20"), []string{"serve"}, "BRIDGE_DELIVERY_LEASE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			m := &Main{Stdout: &out, Stderr: &errOut, Getenv: envFrom(tc.env), Ready: make(chan struct{})}
			err := m.Run(context.Background(), tc.args)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestHelpListsEveryEnvironmentVariable(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errOut, Getenv: envFrom(nil), Ready: make(chan struct{})}
	require.NoError(t, m.Run(context.Background(), []string{"help"}))
	for _, env := range []string{"QUBS_API_URL", "QUBS_TOKEN_URL", "QUBS_CLIENT_ID", "QUBS_CLIENT_SECRET", "QUBS_CLIENT_SECRET_FILE",
		"BRIDGE_LISTEN", "BRIDGE_PUBLIC_URL", "BRIDGE_STORE", "BRIDGE_AUTH", "BRIDGE_DEFAULT_TIMEZONE", "BRIDGE_SITE_TIMEZONES", "BRIDGE_COMMENT_POLL_RATE"} {
		assert.Contains(t, out.String(), env)
	}
	assert.True(t, strings.Contains(out.String(), "--public-url"))
	assert.Empty(t, errOut.String(), "help asked for goes to stdout")

	out.Reset()
	require.NoError(t, m.Run(context.Background(), []string{"qubs-sim", "--help"}))
	assert.Contains(t, out.String(), "listen address of the QUBS simulator")
	assert.NotContains(t, out.String(), "FHIR server")

	out.Reset()
	require.Error(t, m.Run(context.Background(), nil))
	assert.Empty(t, out.String(), "a usage mistake goes to stderr")
	assert.Contains(t, errOut.String(), "usage: qubs-fhir-bridge")
}

// TestServeFailsFastOnRefusedCredentials: QUBS saying invalid_client is an
// operator's mistake no retry fixes, so serve stops at once with a line
// naming the settings, before it creates any store; QUBS being down is
// not, so serve comes up.
func TestServeFailsFastOnRefusedCredentials(t *testing.T) {
	t.Parallel()
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Seed: 1, Appointments: 10})
	require.NoError(t, err)
	defer sim.Close()
	dir := t.TempDir()
	env := map[string]string{
		"QUBS_API_URL": sim.URL, "QUBS_TOKEN_URL": sim.TokenURL(),
		"QUBS_CLIENT_ID": qubssim.DefaultClientID, "QUBS_CLIENT_SECRET": "wrong",
		"BRIDGE_LISTEN": "127.0.0.1:0", "BRIDGE_AUTH": "none", "BRIDGE_STORE": "sqlite:" + filepath.Join(dir, "bridge.db"),
	}
	var errOut bytes.Buffer
	m := &Main{Stdout: io.Discard, Stderr: &errOut, Getenv: envFrom(env), Ready: make(chan struct{})}
	err = m.Run(context.Background(), []string{"serve"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "QUBS refused the bridge's credentials")
	assert.Contains(t, err.Error(), "QUBS_CLIENT_SECRET")
	assert.NoFileExists(t, filepath.Join(dir, "bridge.db"), "nothing created before the check")
}

// TestRateLimitDefaults: serve limits each client (docs/configuration.md
// says why these numbers); the demo does not.
func TestRateLimitDefaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cmd  string
		want server.RateLimit
	}{
		{"serve", server.RateLimit{Rate: 50, Burst: 200}},
		{"demo", server.RateLimit{Rate: 0, Burst: 200}},
	} {
		opts := commandOptions(tc.cmd)
		opts.resolve(envFrom(nil))
		got, err := rateLimit(opts)
		require.NoError(t, err)
		assert.Equal(t, tc.want, got, tc.cmd)
	}
}

// TestUserMessage: the line an operator reads names settings and causes,
// never the Go functions the error passed through.
func TestUserMessage(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"opening the SQLite store: sqlite.Open: internal: open /x/y.db: no such file or directory":            "opening the SQLite store: open /x/y.db: no such file or directory",
		`BRIDGE_STATIC_TOKENS_FILE: auth.NewStatic("/nope.json"): open /nope.json: no such file or directory`: "BRIDGE_STATIC_TOKENS_FILE: open /nope.json: no such file or directory",
		"BRIDGE_LISTEN 127.0.0.1:80: listen tcp 127.0.0.1:80:\n bind: permission denied":                      "BRIDGE_LISTEN 127.0.0.1:80: listen tcp 127.0.0.1:80: bind: permission denied",
	} {
		assert.Equal(t, want, userMessage(errors.New(strings.ReplaceAll(in, "\\n", "\n"))))
	}
}

// TestDemoWebhook: the demo subscribes its own webhook receiver to every
// topic; the handshakes print at once, and a report delivered to the
// simulator prints a report-delivery notification.
func TestDemoWebhook(t *testing.T) {
	t.Parallel()
	m, out, _ := start(t, nil, "demo", "--listen", "127.0.0.1:0", "--sim-listen", "127.0.0.1:0")
	assert.Contains(t, out.String(), "/Subscription' -H", "the demo prints how to subscribe")
	waitFor := func(what, s string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(out.String(), s) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s in the demo's output:\n%s", what, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("handshake", "webhook: handshake report-delivery")
	waitFor("handshake", "webhook: handshake worklist")

	base := m.BridgeURL + "/fhir/acme"
	status, body := fetch(t, base+"/ServiceRequest?_count=1")
	require.Equal(t, http.StatusOK, status)
	var b struct {
		Entry []struct{ Resource struct{ ID string } }
	}
	require.NoError(t, json.Unmarshal(body, &b))
	require.NotEmpty(t, b.Entry)
	report := `{"resourceType":"DiagnosticReport","status":"final","code":{"text":"Imaging report"},"basedOn":[{"reference":"ServiceRequest/` +
		b.Entry[0].Resource.ID + `"}],"conclusion":"No acute abnormality."}`
	res, err := http.Post(base+"/DiagnosticReport", "application/fhir+json", strings.NewReader(report))
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusCreated, res.StatusCode)
	waitFor("report-delivery notification", "webhook: event-notification report-delivery")
	assert.Contains(t, out.String(), ": #1 DiagnosticReport/")
}
