package server_test

import (
	"context"
	"encoding/json"
	"errors"
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
)

// TestAuditTrailNeedsANamedScope: in every mode, a wildcard scope does not
// open the audit trail, whether the wildcard is in a registration (smart),
// a token (jwt) or a token file (static; see TestStaticAuthorization).
func TestAuditTrailNeedsANamedScope(t *testing.T) {
	t.Parallel()
	t.Run("smart", func(t *testing.T) {
		wild, wildJWKS := authtest.NewClient("wild")
		auditor, auditorJWKS := authtest.NewClient("auditor")
		const tokenURL = "http://bridge.test/auth/token"
		e := newEnv(t, withStore(t), withSMART(t, []auth.SMARTClient{
			{ClientID: "wild", JWKS: wildJWKS, Domains: []string{"acme"}, Scope: "system/*.rs"},
			{ClientID: "auditor", JWKS: auditorJWKS, Domains: []string{"acme"}, Scope: "system/AuditEvent.rs"},
		}))
		realTokenURL := e.srv.URL + "/auth/token"
		ctx := context.Background()
		exp := time.Now().Add(4 * time.Minute)

		_, _, err := wild.PostAssertion(ctx, realTokenURL, wild.Assertion(tokenURL, "w-1", exp), "system/AuditEvent.rs")
		var te *authtest.TokenError
		require.True(t, errors.As(err, &te), "a wildcard registration is not granted the audit trail: %v", err)
		assert.Equal(t, "invalid_scope", te.Code)

		tok, granted, err := wild.PostAssertion(ctx, realTokenURL, wild.Assertion(tokenURL, "w-2", exp), "system/*.rs")
		require.NoError(t, err)
		assert.Equal(t, "system/*.rs", granted)
		r := do(t, http.MethodGet, e.base+"/AuditEvent", bearer(tok), nil)
		assert.Equal(t, http.StatusForbidden, r.status, "%s", r.body)
		assert.Contains(t, outcome(t, r), "AuditEvent")

		tok, _, err = auditor.PostAssertion(ctx, realTokenURL, auditor.Assertion(tokenURL, "a-1", exp), "system/AuditEvent.rs")
		require.NoError(t, err)
		r = do(t, http.MethodGet, e.base+"/AuditEvent", bearer(tok), nil)
		assert.Equal(t, http.StatusOK, r.status, "%s", r.body)
	})
	t.Run("jwt", func(t *testing.T) {
		iss := authtest.NewIssuer(t)
		e := newEnv(t, withStore(t), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
			a, err := auth.NewJWT(auth.JWTConfig{JWKSURL: iss.JWKSURL(), Issuer: iss.URL(), Audience: []string{"qubs-fhir-bridge"}})
			require.NoError(t, err)
			sc.Auth, sc.AuthMode = a, "jwt"
		})
		token := func(scope string) string {
			return iss.Sign(map[string]any{"iss": iss.URL(), "aud": "qubs-fhir-bridge", "sub": "ris-7", "jti": scope,
				"exp": time.Now().Add(5 * time.Minute).Unix(), "iat": time.Now().Unix(),
				"scope": scope, "qubs_domains": []string{"acme"}}, "RS256")
		}
		for _, scope := range []string{"system/*.cruds", "user/*.rs", "system/*.read"} {
			r := do(t, http.MethodGet, e.base+"/AuditEvent", bearer(token(scope)), nil)
			assert.Equal(t, http.StatusForbidden, r.status, "%s: %s", scope, r.body)
		}
		r := do(t, http.MethodGet, e.base+"/AuditEvent", bearer(token("system/AuditEvent.rs")), nil)
		assert.Equal(t, http.StatusOK, r.status, "%s", r.body)
	})
	t.Run("none (loopback only) keeps it readable", func(t *testing.T) {
		e := newEnv(t, withStore(t))
		r := get(t, e.base+"/AuditEvent")
		assert.Equal(t, http.StatusOK, r.status, "%s", r.body)
	})
}

// withSMART runs the bridge in mode smart with these clients. The public
// URL is http://bridge.test, so assertions are signed for
// http://bridge.test/auth/token while the test posts to the real listener.
func withSMART(t *testing.T, clients []auth.SMARTClient) envOption {
	return func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		b, err := json.Marshal(clients)
		require.NoError(t, err)
		path := filepath.Join(t.TempDir(), "clients.json")
		require.NoError(t, os.WriteFile(path, b, 0o600))
		sc.PublicURL = "http://bridge.test"
		tokenURL := sc.PublicURL + "/auth/token"
		sm, err := auth.NewSMART(auth.SMARTConfig{ClientsFile: path, TokenURL: tokenURL, Replay: sc.Store, ResourceTypes: server.ResourceTypes})
		require.NoError(t, err)
		sc.Auth, sc.SMART, sc.SMARTTokenURL, sc.SMARTTokenPath, sc.AuthMode = sm.Authenticator(), sm, tokenURL, "/auth/token", "smart"
	}
}

// TestTokenEndpointSpeaksOAuth: every answer of the token endpoint is
// OAuth's JSON, never a FHIR OperationOutcome, whatever the method.
func TestTokenEndpointSpeaksOAuth(t *testing.T) {
	t.Parallel()
	client, jwks := authtest.NewClient("ris")
	e := newEnv(t, withStore(t), withSMART(t, []auth.SMARTClient{
		{ClientID: "ris", JWKS: jwks, Domains: []string{"acme"}, Scope: "system/*.rs"},
	}))
	tokenURL := e.srv.URL + "/auth/token"
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		res, body := raw(t, method, tokenURL, nil)
		assert.Equal(t, http.StatusMethodNotAllowed, res.StatusCode, method)
		assert.Equal(t, "application/json", res.Header.Get("Content-Type"), method)
		assert.Equal(t, http.MethodPost, res.Header.Get("Allow"))
		var oe map[string]any
		require.NoError(t, json.Unmarshal(body, &oe), "%s", body)
		assert.Equal(t, "invalid_request", oe["error"])
	}
	// HTTP Basic is not how a SMART client authenticates: 401 with a
	// challenge in the scheme it tried (RFC 6749 §5.2).
	req, err := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader("grant_type=client_credentials"))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("ris", "a-secret")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, res.StatusCode)
	assert.True(t, strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Basic "), res.Header.Get("WWW-Authenticate"))

	_, _, err = client.PostAssertion(context.Background(), tokenURL,
		client.Assertion("http://bridge.test/auth/token", "j-1", time.Now().Add(4*time.Minute)), "system/Observation.rs")
	var te *authtest.TokenError
	require.True(t, errors.As(err, &te), "%v", err)
	assert.Equal(t, "invalid_scope", te.Code, "the bridge serves no Observation")
}

// TestResourceTypesMatchCapabilities keeps server.ResourceTypes, which the
// token endpoint checks scopes against, equal to what the server serves.
func TestResourceTypesMatchCapabilities(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	var got []string
	for typ := range interactions(t, e.base) {
		got = append(got, typ)
	}
	assert.ElementsMatch(t, server.ResourceTypes, got)
}
