package main

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auditjournal"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite"
)

// runCheck runs `check` with env and returns its stdout and exit code.
func runCheck(t *testing.T, env map[string]string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	m := &Main{Stdout: &out, Stderr: io.Discard, Getenv: envFrom(env), Ready: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := m.Run(ctx, []string{"check"})
	return out.String(), exitCode(err)
}

// lineOf returns check's line for name.
func lineOf(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && strings.Join(f[1:1+len(strings.Fields(name))], " ") == name {
			return l
		}
	}
	return ""
}

// TestCheck runs check against the simulator over HTTP: with good settings
// every line is ok and the exit code 0; each bad setting fails its own line
// (and only with a reason an operator can act on) with exit code 1.
func TestCheck(t *testing.T) {
	t.Parallel()
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Appointments: 10})
	require.NoError(t, err)
	t.Cleanup(func() { sim.Close() })
	skewed, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Appointments: 10, DateSkew: 5 * time.Minute})
	require.NoError(t, err)
	t.Cleanup(func() { skewed.Close() })
	dir := t.TempDir()

	migrated := filepath.Join(dir, "migrated.db")
	st, err := sqlite.Open(context.Background(), migrated)
	require.NoError(t, err)
	require.NoError(t, st.Close())
	ahead := filepath.Join(dir, "ahead.db")
	st, err = sqlite.Open(context.Background(), ahead)
	require.NoError(t, err)
	require.NoError(t, st.Close())
	bumpMigrations(t, ahead)
	garbage := filepath.Join(dir, "garbage.db")
	require.NoError(t, os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 500), 0o600))
	badTokens := filepath.Join(dir, "tokens.json")
	require.NoError(t, os.WriteFile(badTokens, []byte(`[{"name": "ris", "sha256": "nope"`), 0o600))
	badKey := filepath.Join(dir, "signing.pem")
	require.NoError(t, os.WriteFile(badKey, []byte("-----BEGIN EC PRIVATE KEY-----\nbroken\n-----END EC PRIVATE KEY-----\n"), 0o600))
	clients := filepath.Join(dir, "clients.json")
	require.NoError(t, os.WriteFile(clients, []byte(`[]`), 0o600))

	good := map[string]string{
		"QUBS_API_URL": sim.URL, "QUBS_TOKEN_URL": sim.TokenURL(),
		"QUBS_CLIENT_ID": qubssim.DefaultClientID, "QUBS_CLIENT_SECRET": qubssim.DefaultClientSecret,
		"BRIDGE_LISTEN": "127.0.0.1:0", "BRIDGE_STORE": "sqlite:" + migrated, "BRIDGE_DOMAINS": "acme",
	}
	with := func(kv ...string) map[string]string { return overlay(good, kv...) }

	t.Run("good", func(t *testing.T) {
		t.Parallel()
		out, code := runCheck(t, good)
		assert.Equal(t, 0, code, out)
		for _, name := range []string{"config", "auth", "store", "audit-journal", "qubs-token", "qubs-domain acme", "clock"} {
			assert.True(t, strings.HasPrefix(lineOf(out, name), "ok "), "%s line in\n%s", name, out)
		}
		assert.NotContains(t, out, "fail")
		assert.NotContains(t, out, qubssim.DefaultClientSecret)
		assert.Contains(t, lineOf(out, "store"), "up to date")
		assert.Contains(t, lineOf(out, "audit-journal"), migrated+"-audit-journal does not exist yet")
	})
	t.Run("a journal in use", func(t *testing.T) {
		t.Parallel()
		jdir := filepath.Join(t.TempDir(), "journal")
		j, err := auditjournal.Open(jdir, auditjournal.Options{})
		require.NoError(t, err)
		out, code := runCheck(t, with("BRIDGE_AUDIT_JOURNAL", jdir))
		assert.Equal(t, 1, code, out)
		assert.Contains(t, lineOf(out, "audit-journal"), "in use by another process")
		require.NoError(t, j.Close())
		out, code = runCheck(t, with("BRIDGE_AUDIT_JOURNAL", jdir))
		assert.Equal(t, 0, code, out)
		assert.Contains(t, lineOf(out, "audit-journal"), jdir+": ready")
	})

	cases := []struct {
		name string
		env  map[string]string
		line string // the failing check
		want string // in its reason
	}{
		{"wrong client secret", with("QUBS_CLIENT_SECRET", "wrong-secret"), "qubs-token", "refused the bridge's credentials"},
		{"unknown domain", with("BRIDGE_DOMAINS", "acme,nowhere"), "qubs-domain nowhere", "403"},
		{"unreachable QUBS", with("QUBS_API_URL", "http://127.0.0.1:1", "QUBS_TOKEN_URL", "http://127.0.0.1:1/oauth2/token"), "qubs-token", "unreachable"},
		{"store ahead of the binary", with("BRIDGE_STORE", "sqlite:"+ahead), "store", "ahead"},
		{"store unreadable", with("BRIDGE_STORE", "sqlite:"+garbage), "store", "cannot read"},
		{"store directory missing", with("BRIDGE_STORE", "sqlite:"+filepath.Join(dir, "no", "such.db")), "store", "missing"},
		{"broken static tokens file", with("BRIDGE_AUTH", "static", "BRIDGE_STATIC_TOKENS_FILE", badTokens), "auth", "BRIDGE_STATIC_TOKENS_FILE"},
		{"broken SMART signing key", with("BRIDGE_AUTH", "smart", "BRIDGE_PUBLIC_URL", "https://bridge.example", "BRIDGE_SMART_CLIENTS_FILE", clients,
			"BRIDGE_SMART_SIGNING_KEY_FILE", badKey), "auth", "BRIDGE_SMART"},
		{"unreachable JWKS", with("BRIDGE_AUTH", "jwt", "BRIDGE_JWT_JWKS_URL", "http://127.0.0.1:1/jwks", "BRIDGE_JWT_ISSUER", "https://as.example",
			"BRIDGE_JWT_AUDIENCE", "bridge"), "auth", "BRIDGE_JWT_JWKS_URL"},
		{"bad setting", with("BRIDGE_RETENTION", "forever"), "config", "BRIDGE_RETENTION"},
		{"journal directory is a file", with("BRIDGE_AUDIT_JOURNAL", garbage), "audit-journal", "not a directory"},
		{"skewed clock", with("QUBS_API_URL", skewed.URL, "QUBS_TOKEN_URL", skewed.TokenURL()), "clock", "5m0s behind"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, code := runCheck(t, tc.env)
			assert.Equal(t, 1, code, out)
			line := lineOf(out, tc.line)
			assert.True(t, strings.HasPrefix(line, "fail "), "want a failing %s line in\n%s", tc.line, out)
			assert.Contains(t, line, tc.want)
			assert.NotContains(t, out, qubssim.DefaultClientSecret)
			assert.NotContains(t, out, "wrong-secret", "no secret in the lines")
		})
	}
}

// bumpMigrations makes the SQLite store at path look migrated by a newer
// release.
func bumpMigrations(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, '0999_future', 0)`)
	require.NoError(t, err)
}

// TestCheckExitCodes: check and deliveries print their own verdict; main
// exits 1 on it without another line, 2 on a usage mistake.
func TestCheckExitCodes(t *testing.T) {
	t.Parallel()
	assert.Equal(t, 0, exitCode(nil))
	assert.Equal(t, 1, exitCode(errReported))
	assert.Equal(t, 2, exitCode(errUsage))
	assert.Equal(t, 1, exitCode(io.EOF))
}

// overlay is a copy of env with the key-value pairs kv set.
func overlay(env map[string]string, kv ...string) map[string]string {
	m := make(map[string]string, len(env)+len(kv)/2)
	for k, v := range env {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}
