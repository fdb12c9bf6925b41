package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

func TestHashToken(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &bytes.Buffer{}, Stdin: strings.NewReader("s3cret-token\n"), Getenv: envFrom(nil), Ready: make(chan struct{})}
	require.NoError(t, m.Run(context.Background(), []string{"hash-token"}))
	assert.Equal(t, auth.HashToken("s3cret-token")+"\n", out.String())
}

func TestServeStaticTokens(t *testing.T) {
	t.Parallel()
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Appointments: 20})
	require.NoError(t, err)
	t.Cleanup(func() { sim.Close() })
	const token = "static-token-for-the-serve-test-0123456789"
	entries, _ := json.Marshal([]auth.StaticEntry{{Name: "ris", SHA256: auth.HashToken(token), Domains: []string{"acme"}, Scopes: "system/ServiceRequest.rs"}})
	file := filepath.Join(t.TempDir(), "tokens.json")
	require.NoError(t, os.WriteFile(file, entries, 0o600))
	m, _, logs := start(t, map[string]string{
		"QUBS_API_URL": sim.URL, "QUBS_TOKEN_URL": sim.TokenURL(),
		"QUBS_CLIENT_ID": qubssim.DefaultClientID, "QUBS_CLIENT_SECRET": qubssim.DefaultClientSecret,
		"BRIDGE_LISTEN": "127.0.0.1:0", "BRIDGE_STORE": "sqlite:" + t.TempDir() + "/b.db",
		"BRIDGE_AUTH": "static", "BRIDGE_STATIC_TOKENS_FILE": file,
	}, "serve")
	res, err := http.Get(m.BridgeURL + "/fhir/acme/ServiceRequest")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, res.StatusCode)
	req, _ := http.NewRequest("GET", m.BridgeURL+"/fhir/acme/ServiceRequest?_count=1", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.NotContains(t, logs.String(), token)
}
