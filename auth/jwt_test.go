package auth_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth/authtest"
)

const testAudience = "https://bridge.example/fhir"

// jwtClaims are valid claims for the issuer at now, with patient data in
// an extra claim to prove it never reaches an error.
func jwtClaims(iss *authtest.Issuer, now time.Time, mods ...func(map[string]any)) map[string]any {
	c := map[string]any{
		"iss":          iss.URL(),
		"sub":          "ris-acme",
		"aud":          []string{testAudience},
		"exp":          now.Add(5 * time.Minute).Unix(),
		"iat":          now.Unix(),
		"jti":          "jti-1",
		"scope":        "system/ServiceRequest.rs system/DiagnosticReport.cu",
		"qubs_domains": []string{"acme"},
		"name":         phiMarker,
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

func set(k string, v any) func(map[string]any) { return func(c map[string]any) { c[k] = v } }
func del(k string) func(map[string]any)        { return func(c map[string]any) { delete(c, k) } }

func newJWT(t *testing.T, iss *authtest.Issuer, clk *clock, mods ...func(*auth.JWTConfig)) auth.Authenticator {
	t.Helper()
	cfg := auth.JWTConfig{JWKSURL: iss.JWKSURL(), Issuer: iss.URL(), Audience: []string{testAudience}, Now: clk.Now}
	for _, m := range mods {
		m(&cfg)
	}
	a, err := auth.NewJWT(cfg)
	require.NoError(t, err)
	return a
}

func bearer(tok string) []string { return []string{"Bearer " + tok} }

func TestJWT(t *testing.T) {
	iss := authtest.NewIssuer(t)
	clk := newClock()
	now := clk.Now()
	a := newJWT(t, iss, clk)
	ok := iss.Sign(jwtClaims(iss, now), "RS256")

	cases := append(malformedHeaders(ok),
		access{name: "RS256", header: bearer(ok), status: 200},
		access{name: "RS384", header: bearer(iss.Sign(jwtClaims(iss, now), "RS384")), status: 200},
		access{name: "PS256", header: bearer(iss.Sign(jwtClaims(iss, now), "PS256")), status: 200},
		access{name: "ES256", header: bearer(iss.Sign(jwtClaims(iss, now), "ES256")), status: 200},
		access{name: "ES384", header: bearer(iss.Sign(jwtClaims(iss, now), "ES384")), status: 200},
		access{name: "RS512 not in the default allow-list", header: bearer(iss.Sign(jwtClaims(iss, now), "RS512")), status: 401, code: "invalid_token"},
		access{name: "bad signature", header: bearer(authtest.Tamper(ok, "sub", "admin")), status: 401, code: "invalid_token"},
		access{name: "scope widened after signing", header: bearer(authtest.Tamper(ok, "scope", "system/*.*")), status: 401, code: "invalid_token"},
		access{name: "unpublished key", header: bearer(iss.SignUnpublished(jwtClaims(iss, now), "ES256")), status: 401, code: "invalid_token"},
		access{name: "alg none", header: bearer(iss.Sign(jwtClaims(iss, now), "none")), status: 401, code: "invalid_token"},
		access{name: "HMAC keyed with the RSA public key", header: bearer(iss.Sign(jwtClaims(iss, now), "HS256")), status: 401, code: "invalid_token"},
		access{name: "HS384 keyed with the RSA public key", header: bearer(iss.Sign(jwtClaims(iss, now), "HS384")), status: 401, code: "invalid_token"},
		access{name: "expired", header: bearer(iss.Sign(jwtClaims(iss, now, set("exp", now.Add(-2*time.Minute).Unix())), "RS256")), status: 401, code: "invalid_token"},
		access{name: "expired within skew", header: bearer(iss.Sign(jwtClaims(iss, now, set("exp", now.Add(-30*time.Second).Unix())), "RS256")), status: 200},
		access{name: "not yet valid", header: bearer(iss.Sign(jwtClaims(iss, now, set("nbf", now.Add(2*time.Minute).Unix())), "RS256")), status: 401, code: "invalid_token"},
		access{name: "nbf within skew", header: bearer(iss.Sign(jwtClaims(iss, now, set("nbf", now.Add(30*time.Second).Unix())), "RS256")), status: 200},
		access{name: "issued in the future", header: bearer(iss.Sign(jwtClaims(iss, now, set("iat", now.Add(10*time.Minute).Unix())), "RS256")), status: 401, code: "invalid_token"},
		access{name: "no exp", header: bearer(iss.Sign(jwtClaims(iss, now, del("exp")), "RS256")), status: 401, code: "invalid_token"},
		access{name: "exp not a number", header: bearer(iss.Sign(jwtClaims(iss, now, set("exp", "tomorrow")), "RS256")), status: 401, code: "invalid_token"},
		access{name: "wrong issuer", header: bearer(iss.Sign(jwtClaims(iss, now, set("iss", "https://evil.example")), "RS256")), status: 401, code: "invalid_token"},
		access{name: "wrong audience", header: bearer(iss.Sign(jwtClaims(iss, now, set("aud", "https://other.example")), "RS256")), status: 401, code: "invalid_token"},
		access{name: "no audience", header: bearer(iss.Sign(jwtClaims(iss, now, del("aud")), "RS256")), status: 401, code: "invalid_token"},
		access{name: "audience as string", header: bearer(iss.Sign(jwtClaims(iss, now, set("aud", testAudience)), "RS256")), status: 200},
		access{name: "no sub", header: bearer(iss.Sign(jwtClaims(iss, now, del("sub")), "RS256")), status: 401, code: "invalid_token"},
		access{name: "client_id instead of sub", header: bearer(iss.Sign(jwtClaims(iss, now, del("sub"), set("client_id", "ris")), "RS256")), status: 200},
		access{name: "missing scope", header: bearer(ok), resource: "DiagnosticReport", perm: 'r', status: 403, code: "insufficient_scope"},
		access{name: "no scope claim", header: bearer(iss.Sign(jwtClaims(iss, now, del("scope")), "RS256")), status: 403, code: "insufficient_scope"},
		access{name: "scp array", header: bearer(iss.Sign(jwtClaims(iss, now, del("scope"), set("scp", []string{"system/ServiceRequest.rs"})), "RS256")), status: 200},
		access{name: "v1 scope read", header: bearer(iss.Sign(jwtClaims(iss, now, set("scope", "system/*.read")), "RS256")), resource: "Flag", status: 200},
		access{name: "v1 scope read cannot write", header: bearer(iss.Sign(jwtClaims(iss, now, set("scope", "system/*.read")), "RS256")), resource: "DiagnosticReport", perm: 'c', status: 403, code: "insufficient_scope"},
		access{name: "patient scope grants nothing", header: bearer(iss.Sign(jwtClaims(iss, now, set("scope", "patient/*.read")), "RS256")), status: 403, code: "insufficient_scope"},
		access{name: "malformed scope claim", header: bearer(iss.Sign(jwtClaims(iss, now, set("scope", 42)), "RS256")), status: 401, code: "invalid_token"},
		access{name: "malformed scope value", header: bearer(iss.Sign(jwtClaims(iss, now, set("scope", "system/Flag.sr")), "RS256")), status: 401, code: "invalid_token"},
		access{name: "another domain", header: bearer(ok), domain: "beta", status: 403, code: "insufficient_scope"},
		access{name: "no domains claim", header: bearer(iss.Sign(jwtClaims(iss, now, del("qubs_domains")), "RS256")), status: 403, code: "insufficient_scope"},
		access{name: "domains as string", header: bearer(iss.Sign(jwtClaims(iss, now, set("qubs_domains", "acme beta")), "RS256")), domain: "beta", status: 200},
		access{name: "wildcard domain refused", header: bearer(iss.Sign(jwtClaims(iss, now, set("qubs_domains", []string{"*"})), "RS256")), domain: "beta", status: 401, code: "invalid_token"},
		access{name: "malformed domain", header: bearer(iss.Sign(jwtClaims(iss, now, set("qubs_domains", []string{"../acme"})), "RS256")), status: 401, code: "invalid_token"},
		access{name: "garbage", header: bearer("abc.def.ghi"), status: 401, code: "invalid_token"},
		access{name: "five segments (JWE)", header: bearer("a.b.c.d.e"), status: 401, code: "invalid_token"},
	)
	runAccess(t, a, cases)

	t.Run("principal", func(t *testing.T) {
		p, err := authorize(a, access{header: bearer(ok), domain: "acme", resource: "ServiceRequest", perm: 's'})
		require.NoError(t, err)
		assert.Equal(t, &auth.Principal{
			Subject: "ris-acme", Method: "jwt", Domains: []string{"acme"}, TokenID: "jti-1",
			Scopes: []auth.Scope{{Context: "system", Resource: "ServiceRequest", Perms: "rs"}, {Context: "system", Resource: "DiagnosticReport", Perms: "cu"}},
		}, p)
	})

	t.Run("configured claims", func(t *testing.T) {
		a := newJWT(t, iss, clk, func(c *auth.JWTConfig) {
			c.DomainsClaim = "tenants"
			c.ScopeClaim = "perms"
			c.Algorithms = []string{"RS512"}
		})
		tok := iss.Sign(jwtClaims(iss, now, del("scope"), del("qubs_domains"), set("tenants", []string{"beta"}), set("perms", []string{"system/Flag.rs"})), "RS512")
		runAccess(t, a, []access{
			{name: "allowed", header: bearer(tok), domain: "beta", resource: "Flag", status: 200},
			{name: "default claim names ignored", header: bearer(iss.Sign(jwtClaims(iss, now), "RS512")), status: 403, code: "insufficient_scope"},
			{name: "RS256 no longer allowed", header: bearer(ok), status: 401, code: "invalid_token"},
		})
	})
}

func TestNewJWTRefuses(t *testing.T) {
	base := auth.JWTConfig{JWKSURL: "https://idp.example/jwks", Issuer: "https://idp.example", Audience: []string{"x"}}
	cases := []struct {
		name string
		mod  func(*auth.JWTConfig)
	}{
		{"alg none", func(c *auth.JWTConfig) { c.Algorithms = []string{"none"} }},
		{"HMAC", func(c *auth.JWTConfig) { c.Algorithms = []string{"RS256", "HS256"} }},
		{"unknown alg", func(c *auth.JWTConfig) { c.Algorithms = []string{"RSA1_5"} }},
		{"no issuer", func(c *auth.JWTConfig) { c.Issuer = "" }},
		{"no audience", func(c *auth.JWTConfig) { c.Audience = nil }},
		{"empty audience", func(c *auth.JWTConfig) { c.Audience = []string{""} }},
		{"plain http JWKS", func(c *auth.JWTConfig) { c.JWKSURL = "http://idp.example/jwks" }},
		{"relative JWKS", func(c *auth.JWTConfig) { c.JWKSURL = "/jwks" }},
		{"huge skew", func(c *auth.JWTConfig) { c.Skew = time.Hour }},
		{"negative skew", func(c *auth.JWTConfig) { c.Skew = -time.Second }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			c.mod(&cfg)
			_, err := auth.NewJWT(cfg)
			require.Error(t, err)
		})
	}
	t.Run("loopback http allowed", func(t *testing.T) {
		cfg := base
		cfg.JWKSURL = "http://127.0.0.1:1/jwks"
		_, err := auth.NewJWT(cfg)
		require.NoError(t, err)
	})
}

// TestJWKSRotation: a kid never seen before refetches the key set at once
// (a key rotated a moment ago works, SMART BDT Auth-21), each kid at most
// once, within a small budget; beyond it, once per refresh interval however
// many requests carry unknown kids.
func TestJWKSRotation(t *testing.T) {
	iss := authtest.NewIssuer(t)
	clk := newClock()
	const interval = time.Minute
	a := newJWT(t, iss, clk, func(c *auth.JWTConfig) { c.JWKSRefreshInterval = interval; c.JWKSMaxAge = time.Hour })
	try := func(tok string) error {
		_, err := authorize(a, access{header: bearer(tok), domain: "acme", resource: "ServiceRequest", perm: 'r'})
		return err
	}

	require.NoError(t, try(iss.Sign(jwtClaims(iss, clk.Now()), "ES256")))
	require.Equal(t, 1, iss.Fetches(), "first use fetches the key set")
	require.NoError(t, try(iss.Sign(jwtClaims(iss, clk.Now()), "RS256")))
	require.Equal(t, 1, iss.Fetches(), "known kids come from the cache")

	iss.Rotate()
	rotated := iss.Sign(jwtClaims(iss, clk.Now()), "ES256")
	require.NoError(t, try(rotated), "a key rotated right after a fetch works at once")
	require.Equal(t, 2, iss.Fetches())

	t.Run("unknown kids are rate limited", func(t *testing.T) {
		madeUp := iss.SignUnpublished(jwtClaims(iss, clk.Now()), "ES256")
		for range 20 {
			require.Error(t, try(madeUp))
		}
		assert.Equal(t, 3, iss.Fetches(), "one made-up kid costs one fetch, however often it comes")
		for range 20 {
			require.Error(t, try(iss.SignUnpublished(jwtClaims(iss, clk.Now()), "ES256")))
		}
		assert.Equal(t, 1+3, iss.Fetches(), "the first fetch, then the budget of three early fetches (rotation, made-up kid, flood) and no more")
		require.NoError(t, try(rotated), "known keys keep working meanwhile")

		clk.Advance(interval)
		before := iss.Fetches()
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() { _ = try(iss.SignUnpublished(jwtClaims(iss, clk.Now()), "ES384")) })
		}
		wg.Wait()
		// One fetch for the interval that passed, shared by whoever came
		// first, and at most one early fetch the budget earned meanwhile.
		assert.LessOrEqual(t, iss.Fetches()-before, 2, "concurrent unknown kids share fetches")
		assert.GreaterOrEqual(t, iss.Fetches()-before, 1)
	})

	t.Run("keys survive a failing JWKS", func(t *testing.T) {
		iss.Fail(true)
		defer iss.Fail(false)
		clk.Advance(2 * time.Hour) // the keys are stale: the next use refetches
		before := iss.Fetches()
		require.NoError(t, try(iss.Sign(jwtClaims(iss, clk.Now()), "ES256")))
		assert.Equal(t, before+1, iss.Fetches())
		require.NoError(t, try(iss.Sign(jwtClaims(iss, clk.Now()), "ES256")))
		assert.Equal(t, before+1, iss.Fetches(), "failed fetches are rate limited too")
	})
}

// TestJWKSFetchOutlivesClient: a client that hangs up does not abort the
// fetch it triggered, which would lock the next caller out for an interval.
func TestJWKSFetchOutlivesClient(t *testing.T) {
	iss := authtest.NewIssuer(t)
	clk := newClock()
	a := newJWT(t, iss, clk)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/fhir/acme/metadata", nil)
	r.Header.Set("Authorization", "Bearer "+iss.Sign(jwtClaims(iss, clk.Now()), "ES256"))
	_, err := a.Authenticate(r)
	require.NoError(t, err)
}

// TestJWKSKeyFiltering: symmetric keys in a JWKS are never used, so an
// "oct" key published by mistake cannot verify HS256; a key that names its
// "alg" verifies that algorithm only.
func TestJWKSKeyFiltering(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	pinned, err := json.Marshal(jose.JSONWebKey{Key: rsaKey.Public(), KeyID: "pinned", Algorithm: "RS256", Use: "sig"})
	require.NoError(t, err)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"keys":[{"kty":"oct","kid":"hmac","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"},{"kty":"unknown","kid":"x"},` + string(pinned) + `]}`))
	}))
	t.Cleanup(srv.Close)
	clk := newClock()
	a, err := auth.NewJWT(auth.JWTConfig{JWKSURL: srv.URL, Issuer: "https://idp", Audience: []string{testAudience}, Now: clk.Now,
		Algorithms: []string{"RS256", "PS256"}})
	require.NoError(t, err)
	claims := map[string]any{"iss": "https://idp", "aud": testAudience, "sub": "x", "exp": clk.Now().Add(time.Minute).Unix(),
		"scope": "system/*.read", "qubs_domains": "acme"}
	signRSA := func(alg jose.SignatureAlgorithm) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: rsaKey, KeyID: "pinned"}}, nil)
		require.NoError(t, err)
		payload, err := json.Marshal(claims)
		require.NoError(t, err)
		obj, err := s.Sign(payload)
		require.NoError(t, err)
		tok, err := obj.CompactSerialize()
		require.NoError(t, err)
		return tok
	}
	runAccess(t, a, []access{
		{name: "HS256 with a published oct key", header: bearer(authtest.HMAC(secret, "HS256", "hmac", claims)), status: 401, code: "invalid_token"},
		{name: "key pinned to RS256 verifies RS256", header: bearer(signRSA(jose.RS256)), status: 200},
		{name: "key pinned to RS256 refuses PS256", header: bearer(signRSA(jose.PS256)), status: 401, code: "invalid_token"},
	})
}
