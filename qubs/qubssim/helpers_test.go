package qubssim_test

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// t0 is the fake clock's start in tests: a weekday in the seeded season.
var t0 = time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC)

// start runs a simulator on loopback for the test.
func start(t *testing.T, opts qubssim.Options) *qubssim.Server {
	t.Helper()
	srv, err := qubssim.Start("127.0.0.1:0", opts)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, srv.Close()) })
	return srv
}

// startFake runs a simulator with a fake clock at t0.
func startFake(t *testing.T) (*qubssim.Server, *qubssim.FakeClock) {
	t.Helper()
	clk := qubssim.NewFakeClock(t0)
	return start(t, qubssim.Options{Clock: clk}), clk
}

// token gets an access token with the default client.
func token(t *testing.T, srv *qubssim.Server) string {
	t.Helper()
	return tokenFor(t, srv, qubssim.DefaultClientID, qubssim.DefaultClientSecret)
}

func tokenFor(t *testing.T, srv *qubssim.Server, id, secret string) string {
	t.Helper()
	resp, body := postForm(t, srv.TokenURL(), url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.Unmarshal(body, &tr))
	require.NotEmpty(t, tr.AccessToken)
	return tr.AccessToken
}

func postForm(t *testing.T, u string, form url.Values, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header[k] = v
	}
	return send(t, http.DefaultClient, req)
}

func send(t *testing.T, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, body
}

// call is one API request.
type call struct {
	method string
	path   string // under srv.URL
	tok    string
	body   any // marshalled as JSON unless it is a string or []byte
	hdr    map[string]string
}

func (c call) do(t *testing.T, srv *qubssim.Server) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := c.body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		require.NoError(t, err)
		rd = bytes.NewReader(j)
	}
	u := c.path
	if !strings.HasPrefix(u, "http") {
		u = srv.URL + c.path
	}
	req, err := http.NewRequest(c.method, u, rd)
	require.NoError(t, err)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.tok != "" {
		req.Header.Set("Authorization", "Bearer "+c.tok)
	}
	for k, v := range c.hdr {
		req.Header.Set(k, v)
	}
	return send(t, http.DefaultClient, req)
}

func get(t *testing.T, srv *qubssim.Server, tok, path string) (*http.Response, []byte) {
	t.Helper()
	return call{method: http.MethodGet, path: path, tok: tok}.do(t, srv)
}

func apiPath(domain, rest string) string {
	return "/integrations/v1/" + domain + "/reporting/appointments" + rest
}

// requireProblem checks an RFC 7807 answer and returns it.
func requireProblem(t *testing.T, resp *http.Response, body []byte, status int) qubs.Problem {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, string(body))
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	require.NoError(t, err)
	require.Equal(t, "application/problem+json", mt)
	var p qubs.Problem
	require.NoError(t, json.Unmarshal(body, &p))
	assert.Equal(t, status, p.Status)
	assert.NotEmpty(t, p.Type)
	assert.NotEmpty(t, p.Title)
	assert.NotEmpty(t, p.Detail)
	assert.NotEmpty(t, p.Instance)
	assert.NotEmpty(t, p.RequestID)
	assert.NotEmpty(t, resp.Header.Get("X-Correlation-Id"))
	return p
}

// requireJSON checks a JSON answer and decodes it into v.
func requireJSON(t *testing.T, resp *http.Response, body []byte, status int, v any) {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, string(body))
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	require.NoError(t, err)
	require.Equal(t, "application/json", mt)
	if v != nil {
		require.NoError(t, json.Unmarshal(body, v))
	}
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
