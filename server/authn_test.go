package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth/authtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// withStaticTokens runs the bridge in mode static with these tokens.
func withStaticTokens(t *testing.T, entries []auth.StaticEntry) envOption {
	return func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		b, err := json.Marshal(entries)
		require.NoError(t, err)
		path := filepath.Join(t.TempDir(), "tokens.json")
		require.NoError(t, os.WriteFile(path, b, 0o600))
		a, err := auth.NewStatic(path)
		require.NoError(t, err)
		sc.Auth, sc.AuthMode = a, "static"
	}
}

func TestStaticAuthorization(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t), withStaticTokens(t, []auth.StaticEntry{
		{Name: "ris", SHA256: auth.HashToken("ris-token-0123456789abcdef0123456789"), Domains: []string{"acme"}, Scopes: "system/ServiceRequest.rs system/Patient.r system/DiagnosticReport.crus"},
		{Name: "reader", SHA256: auth.HashToken("reader-token-0123456789abcdef012345"), Domains: []string{"acme"}, Scopes: "system/ServiceRequest.rs"},
		{Name: "wild", SHA256: auth.HashToken("wild-token-0123456789abcdef01234567"), Domains: []string{"acme"}, Scopes: "system/*.cruds"},
		{Name: "auditor", SHA256: auth.HashToken("audit-token-0123456789abcdef0123456"), Domains: []string{"acme"}, Scopes: "system/AuditEvent.rs"},
	}))
	_, srID := firstPending(t, e.sim, 40)
	northside := strings.Replace(e.base, "/acme", "/northside", 1)
	cases := []struct {
		name   string
		method string
		url    string
		header http.Header
		body   []byte
		status int
	}{
		{"no token", "GET", e.base + "/ServiceRequest", nil, nil, http.StatusUnauthorized},
		{"basic scheme", "GET", e.base + "/ServiceRequest", http.Header{"Authorization": {"Basic cmlzOnRva2Vu"}}, nil, http.StatusUnauthorized},
		{"malformed header", "GET", e.base + "/ServiceRequest", http.Header{"Authorization": {"Bearer  two spaces"}}, nil, http.StatusBadRequest},
		{"unknown token", "GET", e.base + "/ServiceRequest", bearer("nope-0123456789abcdef0123456789abcdef"), nil, http.StatusUnauthorized},
		{"valid token", "GET", e.base + "/ServiceRequest?_count=2", bearer("ris-token-0123456789abcdef0123456789"), nil, http.StatusOK},
		{"metadata is public", "GET", e.base + "/metadata", nil, nil, http.StatusOK},
		{"another domain", "GET", northside + "/ServiceRequest", bearer("ris-token-0123456789abcdef0123456789"), nil, http.StatusForbidden},
		{"another domain, existing id", "GET", northside + "/ServiceRequest/" + srID, bearer("ris-token-0123456789abcdef0123456789"), nil, http.StatusForbidden},
		{"another domain, unknown id", "GET", northside + "/ServiceRequest/no-such", bearer("ris-token-0123456789abcdef0123456789"), nil, http.StatusForbidden},
		{"missing scope for create", "POST", e.base + "/DiagnosticReport", bearer("reader-token-0123456789abcdef012345"), report{srID: srID, status: "final", text: "x"}.json(), http.StatusForbidden},
		{"missing scope for read", "GET", e.base + "/Patient/x", bearer("reader-token-0123456789abcdef012345"), nil, http.StatusForbidden},
		{"wildcard does not open the audit trail", "GET", e.base + "/AuditEvent", bearer("wild-token-0123456789abcdef01234567"), nil, http.StatusForbidden},
		{"audit scope opens it", "GET", e.base + "/AuditEvent", bearer("audit-token-0123456789abcdef0123456"), nil, http.StatusOK},
		{"auditor cannot read PHI", "GET", e.base + "/ServiceRequest", bearer("audit-token-0123456789abcdef0123456"), nil, http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.header.Clone()
			if h == nil {
				h = http.Header{}
			}
			if tc.body != nil {
				h.Set("Content-Type", "application/fhir+json")
			}
			var body *strings.Reader
			if tc.body != nil {
				body = strings.NewReader(string(tc.body))
			}
			var r *response
			if body != nil {
				r = do(t, tc.method, tc.url, h, body)
			} else {
				r = do(t, tc.method, tc.url, h, nil)
			}
			assert.Equal(t, tc.status, r.status, "%s", r.body)
			if tc.status == http.StatusUnauthorized {
				assert.True(t, strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer realm="), r.header.Get("WWW-Authenticate"))
			}
			if tc.status >= 400 {
				d := outcome(t, r)
				assert.NotContains(t, d, "Jane", "no data in refusals")
			}
		})
	}
	// Probing another domain gives the same answer whether the id exists.
	a := do(t, "GET", northside+"/ServiceRequest/"+srID, bearer("ris-token-0123456789abcdef0123456789"), nil)
	b := do(t, "GET", northside+"/ServiceRequest/no-such", bearer("ris-token-0123456789abcdef0123456789"), nil)
	assert.Equal(t, strings.Split(outcome(t, a), "(correlation")[0], strings.Split(outcome(t, b), "(correlation")[0])

	// Refused attempts are audited too.
	r := do(t, "GET", e.base+"/AuditEvent?_count=500", bearer("audit-token-0123456789abcdef0123456"), nil)
	require.Equal(t, http.StatusOK, r.status)
	var refused int
	for _, m := range entries(r.json(t), "match") {
		if resourceOf(m)["outcome"] == "4" {
			refused++
		}
	}
	assert.Greater(t, refused, 0)
}

// TestSMARTBackendServices: a client registered with its ES384 key gets
// a token and completes the reporting workflow; a tampered assertion and
// a replayed jti are refused.
func TestSMARTBackendServices(t *testing.T) {
	t.Parallel()
	client, jwks := authtest.NewClient("reporting-group")
	var tokenURL string
	e := newEnv(t, withStore(t), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		clients, _ := json.Marshal([]auth.SMARTClient{{
			ClientID: "reporting-group", JWKS: jwks, Domains: []string{"acme"},
			Scope: "system/ServiceRequest.rs system/DiagnosticReport.crus system/Communication.crs system/DocumentReference.rs system/Binary.r",
		}})
		path := filepath.Join(t.TempDir(), "clients.json")
		require.NoError(t, os.WriteFile(path, clients, 0o600))
		// The token URL must be known before the server starts: use a
		// listener-less base and route by path.
		sc.PublicURL = "http://bridge.test"
		tokenURL = sc.PublicURL + "/auth/token"
		sm, err := auth.NewSMART(auth.SMARTConfig{ClientsFile: path, TokenURL: tokenURL, Replay: sc.Store})
		require.NoError(t, err)
		sc.Auth, sc.SMART, sc.SMARTTokenURL, sc.SMARTTokenPath, sc.AuthMode = sm.Authenticator(), sm, tokenURL, "/auth/token", "smart"
	})
	// The test talks to the real listener but signs for the public URL.
	realTokenURL := e.srv.URL + "/auth/token"
	ctx := context.Background()
	post := func(assertion, scope string) (string, error) {
		tok, _, err := client.PostAssertion(ctx, realTokenURL, assertion, scope)
		return tok, err
	}

	r := get(t, e.base+"/.well-known/smart-configuration")
	require.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, tokenURL, r.json(t)["token_endpoint"])

	tok, err := post(client.Assertion(tokenURL, "jti-1", time.Now().Add(4*time.Minute)), "system/ServiceRequest.rs system/DiagnosticReport.cru system/Communication.c")
	require.NoError(t, err)

	appt, srID := firstPending(t, e.sim, 41)
	r = do(t, "GET", e.base+"/ServiceRequest?_count=3", bearer(tok), nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	h := bearer(tok)
	h.Set("Content-Type", "application/fhir+json")
	r = do(t, "POST", e.base+"/DiagnosticReport", h, strings.NewReader(string(report{srID: srID, status: "final", text: "SMART " + phiMarker}.json())))
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	id := r.json(t)["id"].(string)
	r = do(t, "GET", e.base+"/DiagnosticReport/"+id, bearer(tok), nil)
	assert.Equal(t, http.StatusOK, r.status)
	comment, _ := json.Marshal(map[string]any{
		"resourceType": "Communication", "status": "completed",
		"basedOn": []any{map[string]any{"reference": "ServiceRequest/" + srID}},
		"payload": []any{map[string]any{"contentString": "Reported via SMART. " + phiMarker}},
	})
	r = do(t, "POST", e.base+"/Communication", h, strings.NewReader(string(comment)))
	assert.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	eventually(t, "the report in QUBS", func() bool {
		return len(e.sim.Reports("acme", appt.AppointmentID)) == 1
	})
	r = do(t, "GET", e.base+"/Communication?based-on=ServiceRequest/"+srID, bearer(tok), nil)
	assert.Equal(t, http.StatusForbidden, r.status, "the token was granted only what was asked")

	t.Run("replayed jti", func(t *testing.T) {
		_, err := post(client.Assertion(tokenURL, "jti-1", time.Now().Add(4*time.Minute)), "system/ServiceRequest.rs")
		assert.Error(t, err)
	})
	t.Run("tampered assertion", func(t *testing.T) {
		a := authtest.Tamper(client.Assertion(tokenURL, "jti-2", time.Now().Add(4*time.Minute)), "sub", "someone-else")
		_, err := post(a, "system/ServiceRequest.rs")
		assert.Error(t, err)
	})
	t.Run("assertion for another audience", func(t *testing.T) {
		_, err := post(client.Assertion(realTokenURL, "jti-3", time.Now().Add(4*time.Minute)), "system/ServiceRequest.rs")
		assert.Error(t, err)
	})
	t.Run("forged access token", func(t *testing.T) {
		r := do(t, "GET", e.base+"/ServiceRequest", bearer(authtest.Tamper(tok, "scope", "system/*.cruds")), nil)
		assert.Equal(t, http.StatusUnauthorized, r.status)
		outcome(t, r)
	})
}

func TestJWTAuthorization(t *testing.T) {
	t.Parallel()
	iss := authtest.NewIssuer(t)
	e := newEnv(t, func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		a, err := auth.NewJWT(auth.JWTConfig{JWKSURL: iss.JWKSURL(), Issuer: iss.URL(), Audience: []string{"qubs-fhir-bridge"}})
		require.NoError(t, err)
		sc.Auth, sc.AuthMode = a, "jwt"
	})
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{"iss": iss.URL(), "aud": "qubs-fhir-bridge", "sub": "ris-7", "jti": "j1",
			"exp": time.Now().Add(5 * time.Minute).Unix(), "iat": time.Now().Unix(),
			"scope": "system/ServiceRequest.rs", "qubs_domains": []string{"acme"}}
		if mod != nil {
			mod(c)
		}
		return c
	}
	cases := []struct {
		name   string
		tok    string
		status int
	}{
		{"valid RS256", iss.Sign(claims(nil), "RS256"), http.StatusOK},
		{"valid ES384", iss.Sign(claims(nil), "ES384"), http.StatusOK},
		{"alg none", iss.Sign(claims(nil), "none"), http.StatusUnauthorized},
		{"HMAC with the public key", iss.Sign(claims(nil), "HS256"), http.StatusUnauthorized},
		{"unknown key", iss.SignUnpublished(claims(nil), "RS256"), http.StatusUnauthorized},
		{"expired", iss.Sign(claims(func(c map[string]any) { c["exp"] = time.Now().Add(-10 * time.Minute).Unix() }), "RS256"), http.StatusUnauthorized},
		{"not yet valid", iss.Sign(claims(func(c map[string]any) { c["nbf"] = time.Now().Add(10 * time.Minute).Unix() }), "RS256"), http.StatusUnauthorized},
		{"wrong issuer", iss.Sign(claims(func(c map[string]any) { c["iss"] = "https://evil.example" }), "RS256"), http.StatusUnauthorized},
		{"wrong audience", iss.Sign(claims(func(c map[string]any) { c["aud"] = "another-api" }), "RS256"), http.StatusUnauthorized},
		{"missing scope", iss.Sign(claims(func(c map[string]any) { c["scope"] = "system/Patient.r" }), "RS256"), http.StatusForbidden},
		{"another domain", iss.Sign(claims(func(c map[string]any) { c["qubs_domains"] = []string{"northside"} }), "RS256"), http.StatusForbidden},
		{"bad signature", authtest.Tamper(iss.Sign(claims(nil), "RS256"), "scope", "system/*.cruds"), http.StatusUnauthorized},
	}
	t.Run("a key rotated a moment ago works at once", func(t *testing.T) {
		require.Equal(t, http.StatusOK, do(t, "GET", e.base+"/ServiceRequest?_count=1", bearer(iss.Sign(claims(nil), "ES384")), nil).status)
		iss.Rotate()
		r := do(t, "GET", e.base+"/ServiceRequest?_count=1", bearer(iss.Sign(claims(nil), "ES384")), nil)
		assert.Equal(t, http.StatusOK, r.status, "%s", r.body)
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, "GET", e.base+"/ServiceRequest?_count=1", bearer(tc.tok), nil)
			assert.Equal(t, tc.status, r.status, "%s", r.body)
			if tc.status != http.StatusOK {
				outcome(t, r)
				assert.NotContains(t, string(r.body), `"ServiceRequest"`, "no data")
			}
		})
	}
}

// TestIncludeNeedsReadScope: _include is a read of what it includes, so a
// token that can only search ServiceRequests gets no Patient through it.
func TestIncludeNeedsReadScope(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStaticTokens(t, []auth.StaticEntry{
		{Name: "narrow", SHA256: auth.HashToken("narrow-token-0123456789abcdef012345"), Domains: []string{"acme"}, Scopes: "system/ServiceRequest.rs"},
		{Name: "broad", SHA256: auth.HashToken("broad-token-0123456789abcdef0123456"), Domains: []string{"acme"}, Scopes: "system/ServiceRequest.rs system/Patient.r"},
	}))
	q := "/ServiceRequest?_count=20&_include=ServiceRequest:subject&_include=ServiceRequest:requester"
	r := do(t, "GET", e.base+q, bearer("narrow-token-0123456789abcdef012345"), nil)
	require.Equal(t, http.StatusOK, r.status)
	b := r.json(t)
	assert.Empty(t, entries(b, "include"), "no Patient or Practitioner without their scope")
	assert.Len(t, entries(b, "outcome"), 1, "the client is told")
	assert.NotEmpty(t, entries(b, "match"))

	r = do(t, "GET", e.base+q, bearer("broad-token-0123456789abcdef0123456"), nil)
	types := map[string]bool{}
	for _, inc := range entries(r.json(t), "include") {
		types[resourceOf(inc)["resourceType"].(string)] = true
	}
	assert.True(t, types["Patient"])
	assert.False(t, types["Practitioner"], "requester needs Practitioner.r")
}

// TestRefusalsAreThrottled: bad tokens are charged to the address, and
// throttled answers do not fill the audit trail.
func TestRefusalsAreThrottled(t *testing.T) {
	t.Parallel()
	var st store.Store
	e := newEnv(t, withStore(t), withStaticTokens(t, []auth.StaticEntry{
		{Name: "ris", SHA256: auth.HashToken("ris-token-0123456789abcdef0123456789"), Domains: []string{"acme"}, Scopes: "system/ServiceRequest.rs"},
	}), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		sc.RateLimit = server.RateLimit{Rate: 0.01, Burst: 3}
		st = sc.Store
	})
	codes := map[int]int{}
	for range 20 {
		codes[do(t, "GET", e.base+"/ServiceRequest", bearer("guess-0123456789abcdef0123456789abcd"), nil).status]++
	}
	assert.Equal(t, 3, codes[http.StatusUnauthorized])
	assert.Equal(t, 17, codes[http.StatusTooManyRequests])
	recs, _, err := st.SearchAudit(context.Background(), "acme", store.AuditFilter{Limit: 100})
	require.NoError(t, err)
	assert.Len(t, recs, 3+1, "the refusals that were examined, and the first throttled one")

	// The other 16 429s are counted, and recorded as one when the minute
	// ends or the bridge stops.
	require.NoError(t, e.bridge.Close(context.Background()))
	recs, _, err = st.SearchAudit(context.Background(), "acme", store.AuditFilter{Limit: 100})
	require.NoError(t, err)
	require.Len(t, recs, 3+1+1)
	var summary int
	for _, r := range recs {
		if strings.Contains(r.OutcomeDesc, "16 more throttled requests") {
			summary++
		}
	}
	assert.Equal(t, 1, summary, "one record counts the rest")
}

// TestTooLargeIsAudited: a body refused for its declared length is in the
// audit trail like any other refusal.
func TestTooLargeIsAudited(t *testing.T) {
	t.Parallel()
	var st store.Store
	e := newEnv(t, withStore(t), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		sc.MaxBodyBytes = 1 << 10
		st = sc.Store
	})
	h := http.Header{"Content-Type": {"application/fhir+json"}}
	r := do(t, http.MethodPost, e.base+"/DiagnosticReport", h, strings.NewReader(strings.Repeat(" ", 2<<10)+"{}"))
	require.Equal(t, http.StatusRequestEntityTooLarge, r.status)
	require.NoError(t, e.bridge.Close(context.Background()))
	recs, _, err := st.SearchAudit(context.Background(), "acme", store.AuditFilter{Limit: 10})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	assert.Equal(t, "HTTP 413", recs[0].OutcomeDesc)
	assert.Equal(t, store.AuditActionCreate, recs[0].Action)
}
