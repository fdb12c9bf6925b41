package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
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
	t.Run("smart", func(t *testing.T) {
		wild, wildJWKS := authtest.NewClient("wild")
		auditor, auditorJWKS := authtest.NewClient("auditor")
		var tokenURL string
		e := newEnv(t, withStore(t), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
			clients, _ := json.Marshal([]auth.SMARTClient{
				{ClientID: "wild", JWKS: wildJWKS, Domains: []string{"acme"}, Scope: "system/*.rs"},
				{ClientID: "auditor", JWKS: auditorJWKS, Domains: []string{"acme"}, Scope: "system/AuditEvent.rs"},
			})
			path := filepath.Join(t.TempDir(), "clients.json")
			require.NoError(t, os.WriteFile(path, clients, 0o600))
			sc.PublicURL = "http://bridge.test"
			tokenURL = sc.PublicURL + "/auth/token"
			sm, err := auth.NewSMART(auth.SMARTConfig{ClientsFile: path, TokenURL: tokenURL, Replay: sc.Store})
			require.NoError(t, err)
			sc.Auth, sc.SMART, sc.SMARTTokenURL, sc.SMARTTokenPath, sc.AuthMode = sm.Authenticator(), sm, tokenURL, "/auth/token", "smart"
		})
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
