package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth/authtest"
)

// smartEnv is a SMART authorization server on a real loopback listener
// with three registered clients: ES384 inline, RS384 inline, ES384 by
// jwks_uri.
type smartEnv struct {
	s        *auth.SMART
	tokenURL string
	clk      *clock
	keyFile  string
	es       *authtest.Client // ris-acme
	rs       *authtest.Client // pacs-rsa
	uri      *authtest.Client // ris-uri
	clients  string           // the clients file
	// uriKeys is what ris-uri's jwks_uri serves; keyFetches counts its
	// fetches.
	uriKeys    atomic.Pointer[[]byte]
	keyFetches atomic.Int32
}

type smartOpt func(*auth.SMARTConfig)

func newSMARTEnv(t *testing.T, opts ...smartOpt) *smartEnv {
	t.Helper()
	e := &smartEnv{clk: newClock()}
	var esJWKS, rsJWKS, uriJWKS []byte
	e.es, esJWKS = authtest.NewClient("ris-acme")
	e.rs, rsJWKS = authtest.NewRSAClient("pacs-rsa")
	e.uri, uriJWKS = authtest.NewClient("ris-uri")
	for _, c := range []*authtest.Client{e.es, e.rs, e.uri} {
		c.Now = e.clk.Now
	}
	e.uriKeys.Store(&uriJWKS)
	keys := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.keyFetches.Add(1)
		_, _ = w.Write(*e.uriKeys.Load())
	}))
	t.Cleanup(keys.Close)
	e.clients = fmt.Sprintf(`[
  {"client_id": "ris-acme", "name": "Acme RIS", "jwks": %s, "scope": "system/ServiceRequest.rs system/DiagnosticReport.cu", "domains": ["acme"]},
  {"client_id": "pacs-rsa", "jwks": %s, "scope": "system/*.read", "domains": ["acme", "beta"]},
  {"client_id": "ris-uri", "jwks_uri": %q, "scope": "system/Flag.rs", "domains": ["acme"]}
]`, esJWKS, rsJWKS, keys.URL+"/jwks.json")
	key, err := auth.GenerateSigningKey()
	require.NoError(t, err)
	e.keyFile = writeFile(t, "signing.pem", string(key))

	srv := httptest.NewUnstartedServer(nil)
	e.tokenURL = "http://" + srv.Listener.Addr().String() + "/auth/token"
	cfg := auth.SMARTConfig{
		ClientsFile:    writeFile(t, "clients.json", e.clients),
		SigningKeyFile: e.keyFile,
		TokenURL:       e.tokenURL,
		Issuer:         "https://bridge.example",
		Now:            e.clk.Now,
	}
	for _, o := range opts {
		o(&cfg)
	}
	e.s, err = auth.NewSMART(cfg)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/auth/token", e.s.TokenHandler())
	srv.Config.Handler = mux
	srv.Start()
	t.Cleanup(srv.Close)
	return e
}

func (e *smartEnv) assertion(c *authtest.Client, mods ...func(map[string]any)) string {
	claims := c.AssertionClaims(e.tokenURL, randomJTI(), e.clk.Now().Add(4*time.Minute))
	for _, m := range mods {
		m(claims)
	}
	return c.Sign(claims)
}

func randomJTI() string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func tokenForm(assertion, scope string) url.Values {
	return url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {authtest.AssertionType},
		"client_assertion":      {assertion},
		"scope":                 {scope},
	}
}

type tokenReply struct {
	status int
	header http.Header
	body   map[string]any
}

func postToken(t *testing.T, method, target, contentType, body string) tokenReply {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, target, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	r := tokenReply{status: resp.StatusCode, header: resp.Header}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r.body), "every answer is JSON")
	return r
}

func TestSMARTTokenEndpoint(t *testing.T) {
	e := newSMARTEnv(t)
	form := "application/x-www-form-urlencoded"
	type tc struct {
		name        string
		method      string // default POST
		contentType string // default form
		query       string
		body        func() string
		status      int
		code        string // RFC 6749 error; "" on success
		scope       string // granted scope on success
	}
	ok := func(c *authtest.Client, scope string) func() string {
		return func() string { return tokenForm(e.assertion(c), scope).Encode() }
	}
	with := func(c *authtest.Client, scope string, mods ...func(map[string]any)) func() string {
		return func() string { return tokenForm(e.assertion(c, mods...), scope).Encode() }
	}
	replayed := e.assertion(e.es)
	cases := []tc{
		{name: "ES384 client", body: ok(e.es, "system/ServiceRequest.rs"), status: 200, scope: "system/ServiceRequest.rs"},
		{name: "RS384 client", body: ok(e.rs, "system/*.read"), status: 200, scope: "system/*.rs"},
		{name: "jwks_uri client", body: ok(e.uri, "system/Flag.read"), status: 200, scope: "system/Flag.rs"},
		{name: "scope intersection", body: ok(e.es, "system/*.read system/DiagnosticReport.cruds openid"), status: 200,
			scope: "system/ServiceRequest.rs system/DiagnosticReport.cu"},
		{name: "nothing granted", body: ok(e.es, "system/Patient.read"), status: 400, code: "invalid_scope"},
		{name: "no scope", body: ok(e.es, ""), status: 400, code: "invalid_scope"},
		{name: "malformed scope", body: ok(e.es, "system/Flag.sr"), status: 400, code: "invalid_scope"},
		{name: "tampered assertion", body: func() string {
			return tokenForm(authtest.Tamper(e.assertion(e.es), "exp", e.clk.Now().Add(time.Hour).Unix()), "system/*.read").Encode()
		}, status: 401, code: "invalid_client"},
		{name: "signed by another client's key", body: func() string {
			return tokenForm(e.uri.Sign(e.es.AssertionClaims(e.tokenURL, randomJTI(), e.clk.Now().Add(time.Minute))), "system/*.read").Encode()
		}, status: 401, code: "invalid_client"},
		{name: "aud mismatch", body: with(e.es, "system/*.read", set("aud", "https://bridge.example/other/token")), status: 401, code: "invalid_client"},
		{name: "aud list with token URL", body: with(e.es, "system/*.read", set("aud", []string{"x", e.tokenURL})), status: 200, scope: "system/ServiceRequest.rs"},
		{name: "exp more than 5 min ahead", body: with(e.es, "system/*.read", set("exp", e.clk.Now().Add(10*time.Minute).Unix())), status: 401, code: "invalid_client"},
		{name: "exp 5 min ahead within skew", body: with(e.es, "system/*.read", set("exp", e.clk.Now().Add(5*time.Minute+30*time.Second).Unix())), status: 200, scope: "system/ServiceRequest.rs"},
		{name: "expired assertion", body: with(e.es, "system/*.read", set("exp", e.clk.Now().Add(-2*time.Minute).Unix())), status: 401, code: "invalid_client"},
		{name: "no exp", body: with(e.es, "system/*.read", del("exp")), status: 401, code: "invalid_client"},
		{name: "not yet valid", body: with(e.es, "system/*.read", set("nbf", e.clk.Now().Add(2*time.Minute).Unix())), status: 401, code: "invalid_client"},
		{name: "iss != sub", body: with(e.es, "system/*.read", set("sub", "pacs-rsa")), status: 401, code: "invalid_client"},
		{name: "unknown client", body: func() string {
			c, _ := authtest.NewClient("nobody")
			return tokenForm(c.Assertion(e.tokenURL, randomJTI(), e.clk.Now().Add(time.Minute)), "system/*.read").Encode()
		}, status: 401, code: "invalid_client"},
		{name: "impersonating a client with an unregistered key", body: func() string {
			c, _ := authtest.NewClient("ris-acme")
			return tokenForm(c.Assertion(e.tokenURL, randomJTI(), e.clk.Now().Add(time.Minute)), "system/*.read").Encode()
		}, status: 401, code: "invalid_client"},
		{name: "no jti", body: with(e.es, "system/*.read", del("jti")), status: 401, code: "invalid_client"},
		{name: "jti first use", body: func() string { return tokenForm(replayed, "system/*.read").Encode() }, status: 200, scope: "system/ServiceRequest.rs"},
		{name: "jti replay", body: func() string { return tokenForm(replayed, "system/*.read").Encode() }, status: 401, code: "invalid_client"},
		{name: "alg none", body: func() string {
			return tokenForm(authtest.Unsigned(e.es.AssertionClaims(e.tokenURL, randomJTI(), e.clk.Now().Add(time.Minute)), e.es.KeyID()), "system/*.read").Encode()
		}, status: 401, code: "invalid_client"},
		{name: "HMAC keyed with the client's public key", body: func() string {
			return tokenForm(authtest.HMAC(e.es.PublicKeyPEM(), "HS384", e.es.KeyID(), e.es.AssertionClaims(e.tokenURL, randomJTI(), e.clk.Now().Add(time.Minute))), "system/*.read").Encode()
		}, status: 401, code: "invalid_client"},
		{name: "HMAC keyed with the RSA client's public key", body: func() string {
			return tokenForm(authtest.HMAC(e.rs.PublicKeyPEM(), "HS256", e.rs.KeyID(), e.rs.AssertionClaims(e.tokenURL, randomJTI(), e.clk.Now().Add(time.Minute))), "system/*.read").Encode()
		}, status: 401, code: "invalid_client"},
		{name: "no kid", body: func() string {
			return tokenForm(e.es.SignWithoutKid(e.es.AssertionClaims(e.tokenURL, randomJTI(), e.clk.Now().Add(time.Minute))), "system/*.read").Encode()
		}, status: 401, code: "invalid_client"},
		{name: "foreign jku", body: func() string {
			return tokenForm(e.es.SignWithHeaders(e.es.AssertionClaims(e.tokenURL, randomJTI(), e.clk.Now().Add(time.Minute)), map[string]any{"jku": "https://evil.example/jwks"}), "system/*.read").Encode()
		}, status: 401, code: "invalid_client"},
		{name: "client_id parameter mismatch", body: func() string {
			f := tokenForm(e.assertion(e.es), "system/*.read")
			f.Set("client_id", "pacs-rsa")
			return f.Encode()
		}, status: 401, code: "invalid_client"},
		{name: "client_id parameter matching", body: func() string {
			f := tokenForm(e.assertion(e.es), "system/*.read")
			f.Set("client_id", "ris-acme")
			return f.Encode()
		}, status: 200, scope: "system/ServiceRequest.rs"},
		{name: "unsupported grant type", body: func() string {
			f := tokenForm(e.assertion(e.es), "system/*.read")
			f.Set("grant_type", "password")
			return f.Encode()
		}, status: 400, code: "unsupported_grant_type"},
		{name: "no grant type", body: func() string {
			f := tokenForm(e.assertion(e.es), "system/*.read")
			f.Del("grant_type")
			return f.Encode()
		}, status: 400, code: "invalid_request"},
		{name: "wrong assertion type", body: func() string {
			f := tokenForm(e.assertion(e.es), "system/*.read")
			f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
			return f.Encode()
		}, status: 401, code: "invalid_client"},
		{name: "no assertion", body: func() string {
			f := tokenForm("", "system/*.read")
			return f.Encode()
		}, status: 401, code: "invalid_client"},
		{name: "garbage assertion", body: func() string { return tokenForm("not.a.jwt", "system/*.read").Encode() }, status: 401, code: "invalid_client"},
		{name: "repeated parameter", body: func() string { return ok(e.es, "system/*.read")() + "&scope=system/Flag.r" }, status: 400, code: "invalid_request"},
		{name: "parameters in the query", query: "?grant_type=client_credentials", body: ok(e.es, "system/*.read"), status: 400, code: "invalid_request"},
		{name: "JSON body", contentType: "application/json", body: func() string { return `{"grant_type":"client_credentials"}` }, status: 400, code: "invalid_request"},
		{name: "GET", method: http.MethodGet, body: func() string { return "" }, status: 405, code: "invalid_request"},
		{name: "body too large", body: func() string { return ok(e.es, "system/*.read")() + "&pad=" + strings.Repeat("a", 70<<10) }, status: 400, code: "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method, ct := c.method, c.contentType
			if method == "" {
				method = http.MethodPost
			}
			if ct == "" {
				ct = form
			}
			r := postToken(t, method, e.tokenURL+c.query, ct, c.body())
			assert.Equal(t, c.status, r.status, "body %v", r.body)
			assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
			assert.Equal(t, "application/json", r.header.Get("Content-Type"))
			if c.code != "" {
				assert.Equal(t, c.code, r.body["error"])
				desc, _ := r.body["error_description"].(string)
				assert.Regexp(t, printable, desc)
				assert.NotContains(t, r.body, "access_token")
				return
			}
			assert.Equal(t, "bearer", r.body["token_type"])
			assert.Equal(t, float64(300), r.body["expires_in"])
			assert.Equal(t, c.scope, r.body["scope"])
			assert.NotEmpty(t, r.body["access_token"])
		})
	}
}

// TestSMARTAccessTokens: tokens the endpoint issues are accepted by the
// Authenticator with the granted scopes and the client's domains, and the
// usual forgeries of them are refused.
func TestSMARTAccessTokens(t *testing.T) {
	e := newSMARTEnv(t)
	ctx := context.Background()
	tok, err := e.es.Token(ctx, e.tokenURL, "system/*.read system/DiagnosticReport.cu")
	require.NoError(t, err)
	a := e.s.Authenticator()

	// forge signs claims with the bridge's real key, as only the bridge can.
	forge := func(mods ...func(map[string]any)) string {
		claims := map[string]any{
			"iss": "https://bridge.example", "aud": "https://bridge.example", "sub": "ris-acme", "client_id": "ris-acme",
			"scope": "system/ServiceRequest.rs", "qubs_domains": []string{"acme"}, "jti": "forged",
			"iat": e.clk.Now().Unix(), "exp": e.clk.Now().Add(5 * time.Minute).Unix(), "name": phiMarker,
		}
		for _, m := range mods {
			m(claims)
		}
		return signWithKeyFile(t, e.keyFile, e.s.JWKS(), claims)
	}
	var pub jose.JSONWebKeySet
	require.NoError(t, json.Unmarshal(e.s.JWKS(), &pub))
	require.Len(t, pub.Keys, 1)
	pubDER, err := x509.MarshalPKIXPublicKey(pub.Keys[0].Key)
	require.NoError(t, err)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	kid := pub.Keys[0].KeyID
	iss := authtest.NewIssuer(t)

	cases := append(malformedHeaders(tok),
		access{name: "issued token", header: bearer(tok), status: 200},
		access{name: "granted write", header: bearer(tok), resource: "DiagnosticReport", perm: 'u', status: 200},
		access{name: "forged with the real key", header: bearer(forge()), status: 200},
		access{name: "bad signature", header: bearer(authtest.Tamper(tok, "qubs_domains", []string{"acme", "beta"})), status: 401, code: "invalid_token"},
		access{name: "alg none", header: bearer(authtest.Unsigned(map[string]any{"iss": "https://bridge.example", "aud": "https://bridge.example", "sub": "ris-acme", "exp": e.clk.Now().Add(time.Minute).Unix(), "scope": "system/*.read", "qubs_domains": []string{"acme"}}, kid)), status: 401, code: "invalid_token"},
		access{name: "HMAC keyed with the bridge public key", header: bearer(authtest.HMAC(pubPEM, "HS256", kid, map[string]any{"iss": "https://bridge.example", "aud": "https://bridge.example", "sub": "ris-acme", "exp": e.clk.Now().Add(time.Minute).Unix(), "scope": "system/*.read", "qubs_domains": []string{"acme"}})), status: 401, code: "invalid_token"},
		access{name: "token from another issuer", header: bearer(iss.Sign(map[string]any{"iss": "https://bridge.example", "aud": "https://bridge.example", "sub": "ris-acme", "exp": e.clk.Now().Add(time.Minute).Unix()}, "ES256")), status: 401, code: "invalid_token"},
		access{name: "a client assertion is not an access token", header: bearer(e.assertion(e.es)), status: 401, code: "invalid_token"},
		access{name: "expired", header: bearer(forge(set("exp", e.clk.Now().Add(-2*time.Minute).Unix()))), status: 401, code: "invalid_token"},
		access{name: "not yet valid", header: bearer(forge(set("nbf", e.clk.Now().Add(2*time.Minute).Unix()))), status: 401, code: "invalid_token"},
		access{name: "issued in the future", header: bearer(forge(set("iat", e.clk.Now().Add(10*time.Minute).Unix()))), status: 401, code: "invalid_token"},
		access{name: "wrong issuer", header: bearer(forge(set("iss", "https://other.example"))), status: 401, code: "invalid_token"},
		access{name: "wrong audience", header: bearer(forge(set("aud", "https://other.example"))), status: 401, code: "invalid_token"},
		access{name: "unregistered client", header: bearer(forge(set("sub", "nobody"))), status: 401, code: "invalid_token"},
		access{name: "wildcard domain", header: bearer(forge(set("qubs_domains", "*"))), status: 401, code: "invalid_token"},
		access{name: "missing scope", header: bearer(tok), resource: "DiagnosticReport", perm: 'd', status: 403, code: "insufficient_scope"},
		access{name: "another domain", header: bearer(tok), domain: "beta", status: 403, code: "insufficient_scope"},
	)
	runAccess(t, a, cases)

	t.Run("principal", func(t *testing.T) {
		p, err := authorize(a, access{header: bearer(tok), domain: "acme", resource: "ServiceRequest", perm: 'r'})
		require.NoError(t, err)
		assert.Equal(t, "ris-acme", p.Subject)
		assert.Equal(t, "smart", p.Method)
		assert.Equal(t, []string{"acme"}, p.Domains)
		assert.Equal(t, "system/ServiceRequest.rs system/DiagnosticReport.cu", auth.FormatScopes(p.Scopes))
		assert.NotEmpty(t, p.TokenID)
		assert.NotContains(t, tok, "."+p.TokenID+".", "TokenID is the jti, not a part of the token")
	})

	t.Run("expires after the TTL", func(t *testing.T) {
		e.clk.Advance(5*time.Minute + auth.DefaultSkew + time.Second)
		defer e.clk.Advance(-(5*time.Minute + auth.DefaultSkew + time.Second))
		runAccess(t, a, []access{{name: "expired", header: bearer(tok), status: 401, code: "invalid_token"}})
	})
}

// signWithKeyFile signs claims as the bridge would, with the PEM key file.
func signWithKeyFile(t *testing.T, keyFile string, jwks []byte, claims map[string]any) string {
	t.Helper()
	data, err := os.ReadFile(keyFile)
	require.NoError(t, err)
	block, _ := pem.Decode(data)
	require.NotNil(t, block)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	require.NoError(t, err)
	var set jose.JSONWebKeySet
	require.NoError(t, json.Unmarshal(jwks, &set))
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: set.Keys[0].KeyID}}, nil)
	require.NoError(t, err)
	payload, err := json.Marshal(claims)
	require.NoError(t, err)
	obj, err := s.Sign(payload)
	require.NoError(t, err)
	tok, err := obj.CompactSerialize()
	require.NoError(t, err)
	return tok
}

// TestSMARTReplicas: replicas that share the key file and the replay cache
// accept each other's tokens and refuse each other's replayed assertions;
// with generated keys they do not accept each other's tokens.
func TestSMARTReplicas(t *testing.T) {
	shared := auth.NewMemoryReplayCache()
	a := newSMARTEnv(t, func(c *auth.SMARTConfig) { c.Replay = shared })
	// b is a second replica: same clients, key file and token URL.
	b, err := auth.NewSMART(auth.SMARTConfig{
		ClientsFile: writeFile(t, "clients.json", a.clients), SigningKeyFile: a.keyFile,
		TokenURL: a.tokenURL, Issuer: "https://bridge.example", Replay: shared, Now: a.clk.Now,
	})
	require.NoError(t, err)
	bsrv := httptest.NewServer(b.TokenHandler())
	t.Cleanup(bsrv.Close)

	tok, err := a.es.Token(context.Background(), a.tokenURL, "system/ServiceRequest.rs")
	require.NoError(t, err)
	runAccess(t, b.Authenticator(), []access{{name: "replica accepts", header: bearer(tok), status: 200}})

	assertion := a.assertion(a.es)
	_, _, err = a.es.PostAssertion(context.Background(), a.tokenURL, assertion, "system/ServiceRequest.rs")
	require.NoError(t, err)
	_, _, err = a.es.PostAssertion(context.Background(), bsrv.URL, assertion, "system/ServiceRequest.rs")
	var te *authtest.TokenError
	require.True(t, errors.As(err, &te), "replay on the other replica: %v", err)
	assert.Equal(t, "invalid_client", te.Code)
	assert.Contains(t, te.Description, "jti")

	generated, err := auth.NewSMART(auth.SMARTConfig{
		ClientsFile: writeFile(t, "clients.json", a.clients), TokenURL: a.tokenURL, Issuer: "https://bridge.example", Now: a.clk.Now,
	})
	require.NoError(t, err)
	runAccess(t, generated.Authenticator(), []access{{name: "generated key refuses", header: bearer(tok), status: 401, code: "invalid_token"}})
}

func TestNewSMARTRefuses(t *testing.T) {
	_, esJWKS := authtest.NewClient("c")
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	p256JWKS, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: p256.Public(), KeyID: "k"}}})
	require.NoError(t, err)
	privJWKS, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: p256, KeyID: "k"}}})
	require.NoError(t, err)
	entry := func(fields string) string { return "[{" + fields + "}]" }
	good := fmt.Sprintf(`"client_id":"c","jwks":%s,"scope":"system/*.read","domains":["acme"]`, esJWKS)
	cases := []struct{ name, clients, want string }{
		{"both jwks and jwks_uri", entry(good + `,"jwks_uri":"https://c.example/jwks"`), "exactly one"},
		{"neither", entry(`"client_id":"c","scope":"system/*.read","domains":["acme"]`), "exactly one"},
		{"private key in jwks", entry(fmt.Sprintf(`"client_id":"c","jwks":%s,"scope":"system/*.read","domains":["acme"]`, privJWKS)), "private"},
		{"P-256 key cannot sign ES384", entry(fmt.Sprintf(`"client_id":"c","jwks":%s,"scope":"system/*.read","domains":["acme"]`, p256JWKS)), "P-384"},
		{"http jwks_uri", entry(`"client_id":"c","jwks_uri":"http://c.example/jwks","scope":"system/*.read","domains":["acme"]`), "https"},
		{"no scope", entry(fmt.Sprintf(`"client_id":"c","jwks":%s,"scope":"launch","domains":["acme"]`, esJWKS)), "scope"},
		{"wildcard domain", entry(fmt.Sprintf(`"client_id":"c","jwks":%s,"scope":"system/*.read","domains":["*"]`, esJWKS)), `"*"`},
		{"no domains", entry(fmt.Sprintf(`"client_id":"c","jwks":%s,"scope":"system/*.read"`, esJWKS)), "domain"},
		{"unknown field", entry(good + `,"secret":"x"`), "unknown field"},
		{"bad client id", entry(fmt.Sprintf(`"client_id":"a b","jwks":%s,"scope":"system/*.read","domains":["acme"]`, esJWKS)), "client_id"},
		{"duplicate client", "[{" + good + "},{" + good + "}]", "duplicate"},
		{"empty", "[]", "no clients"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := auth.NewSMART(auth.SMARTConfig{ClientsFile: writeFile(t, "clients.json", c.clients), TokenURL: "https://bridge.example/auth/token"})
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}

	clients := writeFile(t, "clients.json", entry(good))
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	p384DER, err := x509.MarshalPKCS8PrivateKey(p384)
	require.NoError(t, err)
	sec1, err := x509.MarshalECPrivateKey(p256)
	require.NoError(t, err)
	keyCases := []struct {
		name, key string
		ok        bool
	}{
		{"SEC 1 P-256", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})), true},
		{"P-384 key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p384DER})), false},
		{"not PEM", "hello", false},
		{"certificate", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})), false},
	}
	for _, c := range keyCases {
		t.Run("key "+c.name, func(t *testing.T) {
			_, err := auth.NewSMART(auth.SMARTConfig{ClientsFile: clients, SigningKeyFile: writeFile(t, "k.pem", c.key), TokenURL: "https://bridge.example/auth/token"})
			if c.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
	cfgCases := []struct {
		name string
		cfg  auth.SMARTConfig
	}{
		{"relative token URL", auth.SMARTConfig{ClientsFile: clients, TokenURL: "/auth/token"}},
		{"TTL too long", auth.SMARTConfig{ClientsFile: clients, TokenURL: "https://b/t", TokenTTL: 2 * time.Hour}},
		{"missing clients file", auth.SMARTConfig{ClientsFile: filepath.Join(t.TempDir(), "none.json"), TokenURL: "https://b/t"}},
	}
	for _, c := range cfgCases {
		t.Run(c.name, func(t *testing.T) {
			_, err := auth.NewSMART(c.cfg)
			require.Error(t, err)
		})
	}
}

func TestSMARTConfiguration(t *testing.T) {
	e := newSMARTEnv(t)
	doc := auth.SMARTConfiguration(e.tokenURL, e.s.ScopesSupported())
	b, err := json.Marshal(doc)
	require.NoError(t, err)
	assert.JSONEq(t, `{
  "token_endpoint": "`+e.tokenURL+`",
  "grant_types_supported": ["client_credentials"],
  "token_endpoint_auth_methods_supported": ["private_key_jwt"],
  "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
  "scopes_supported": ["system/*.rs", "system/DiagnosticReport.cu", "system/Flag.rs", "system/ServiceRequest.rs"],
  "capabilities": ["client-confidential-asymmetric"]
}`, string(b))
	b, err = json.Marshal(auth.SMARTConfiguration("https://x/token", nil))
	require.NoError(t, err)
	assert.Contains(t, string(b), `"scopes_supported":[]`)
}

func TestMemoryReplayCache(t *testing.T) {
	c := auth.NewMemoryReplayCache()
	ctx := context.Background()
	exp := time.Now().Add(time.Minute)
	steps := []struct {
		name, iss, jti string
		expires        time.Time
		fresh          bool
	}{
		{"first", "a", "1", exp, true},
		{"replay", "a", "1", exp, false},
		{"same jti other issuer", "b", "1", exp, true},
		{"other jti", "a", "2", exp, true},
		{"expired record is fresh again", "a", "3", time.Now().Add(-time.Second), true},
		{"after expiry", "a", "3", exp, true},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			fresh, err := c.ClaimJTI(ctx, s.iss, s.jti, s.expires)
			require.NoError(t, err)
			assert.Equal(t, s.fresh, fresh)
		})
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := c.ClaimJTI(cctx, "a", "4", exp)
	require.Error(t, err)
}

// lockedBuffer is an io.Writer safe to read while the server writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSMARTLog: issued tokens and refusals are logged with the client id
// and never with the assertion or the token.
func TestSMARTLog(t *testing.T) {
	var buf lockedBuffer
	e := newSMARTEnv(t, func(c *auth.SMARTConfig) { c.Logger = slog.New(slog.NewJSONHandler(&buf, nil)) })
	ctx := context.Background()
	assertion := e.assertion(e.es)
	tok, _, err := e.es.PostAssertion(ctx, e.tokenURL, assertion, "system/ServiceRequest.rs")
	require.NoError(t, err)
	_, _, err = e.es.PostAssertion(ctx, e.tokenURL, assertion, "system/ServiceRequest.rs")
	require.Error(t, err)
	log := buf.String()
	assert.Contains(t, log, `"msg":"access token issued"`)
	assert.Contains(t, log, `"msg":"token request refused"`)
	assert.Contains(t, log, `"client_id":"ris-acme"`)
	assert.Contains(t, log, `jti already used`)
	for _, secret := range []string{tok, assertion, strings.Split(tok, ".")[2], strings.Split(assertion, ".")[2]} {
		assert.NotContains(t, log, secret)
	}
}

type brokenReplay struct{}

func (brokenReplay) ClaimJTI(context.Context, string, string, time.Time) (bool, error) {
	return false, errors.New("store unreachable")
}

// TestSMARTReplayCacheDown: without a working replay cache no token is
// issued, since a replay could not be ruled out.
func TestSMARTReplayCacheDown(t *testing.T) {
	e := newSMARTEnv(t, func(c *auth.SMARTConfig) { c.Replay = brokenReplay{}; c.TokenTTL = 2 * time.Minute })
	r := postToken(t, http.MethodPost, e.tokenURL, "application/x-www-form-urlencoded", tokenForm(e.assertion(e.es), "system/*.read").Encode())
	assert.Equal(t, http.StatusInternalServerError, r.status)
	assert.Equal(t, "server_error", r.body["error"])
	assert.NotContains(t, r.body["error_description"], "store unreachable", "internal causes stay in the log")
}

func TestSMARTTokenTTL(t *testing.T) {
	e := newSMARTEnv(t, func(c *auth.SMARTConfig) { c.TokenTTL = 2 * time.Minute })
	r := postToken(t, http.MethodPost, e.tokenURL, "application/x-www-form-urlencoded", tokenForm(e.assertion(e.es), "system/*.read").Encode())
	require.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, float64(120), r.body["expires_in"])
	tok := r.body["access_token"].(string)
	e.clk.Advance(2*time.Minute + auth.DefaultSkew + time.Second)
	runAccess(t, e.s.Authenticator(), []access{{name: "expired after the TTL", header: bearer(tok), status: 401, code: "invalid_token"}})
}

// TestSMARTTokenEndpointRFC6749 covers what RFC 6749 §5.2 and the SMART
// Backend Services tests (BDT Auth-13, -17, -21) ask of refusals.
func TestSMARTTokenEndpointRFC6749(t *testing.T) {
	e := newSMARTEnv(t, func(c *auth.SMARTConfig) {
		c.ResourceTypes = []string{"ServiceRequest", "DiagnosticReport", "Flag"}
	})
	form := "application/x-www-form-urlencoded"

	t.Run("HTTP Basic gets 401 with a Basic challenge", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, e.tokenURL, strings.NewReader(tokenForm(e.assertion(e.es), "system/*.read").Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", form)
		req.SetBasicAuth("ris-acme", "a-secret")
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var body map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
		assert.Equal(t, http.StatusUnauthorized, res.StatusCode)
		assert.True(t, strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Basic "), res.Header.Get("WWW-Authenticate"))
		assert.Equal(t, "invalid_client", body["error"])
		assert.Equal(t, "application/json", res.Header.Get("Content-Type"))
	})
	for _, tc := range []struct{ name, scope, desc string }{
		{"unknown resource type", "system/Foo.read", "Foo"},
		{"unknown type beside a known one", "system/ServiceRequest.rs system/Observation.rs", "Observation"},
		{"only non-resource scopes", "openid fhirUser launch offline_access", "no resource scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := postToken(t, http.MethodPost, e.tokenURL, form, tokenForm(e.assertion(e.rs), tc.scope).Encode())
			assert.Equal(t, http.StatusBadRequest, r.status)
			assert.Equal(t, "invalid_scope", r.body["error"])
			assert.Contains(t, r.body["error_description"], tc.desc)
		})
	}
	t.Run("a key rotated a moment ago works at once, a flood of made-up kids does not fetch on", func(t *testing.T) {
		r := postToken(t, http.MethodPost, e.tokenURL, form, tokenForm(e.assertion(e.uri), "system/Flag.rs").Encode())
		require.Equal(t, http.StatusOK, r.status, "%v", r.body)
		fetched := e.keyFetches.Load()
		require.Equal(t, int32(1), fetched)

		rotated, rotatedJWKS := authtest.NewClient("ris-uri")
		rotated.Now = e.clk.Now
		both := mergeJWKS(t, *e.uriKeys.Load(), rotatedJWKS)
		e.uriKeys.Store(&both)
		r = postToken(t, http.MethodPost, e.tokenURL, form, tokenForm(e.assertion(rotated), "system/Flag.rs").Encode())
		assert.Equal(t, http.StatusOK, r.status, "the new kid refetched the key set at once: %v", r.body)
		assert.Equal(t, int32(2), e.keyFetches.Load())

		for range 30 {
			madeUp, _ := authtest.NewClient("ris-uri") // a kid nobody published
			madeUp.Now = e.clk.Now
			r := postToken(t, http.MethodPost, e.tokenURL, form, tokenForm(e.assertion(madeUp), "system/Flag.rs").Encode())
			require.Equal(t, http.StatusUnauthorized, r.status)
		}
		assert.LessOrEqual(t, e.keyFetches.Load(), int32(1+3), "the first fetch and the budget of early fetches, no more")
		r = postToken(t, http.MethodPost, e.tokenURL, form, tokenForm(e.assertion(rotated), "system/Flag.rs").Encode())
		assert.Equal(t, http.StatusOK, r.status, "known keys keep working meanwhile")
	})
}

// mergeJWKS returns one key set holding the keys of both.
func mergeJWKS(t *testing.T, a, b []byte) []byte {
	t.Helper()
	var x, y struct {
		Keys []json.RawMessage `json:"keys"`
	}
	require.NoError(t, json.Unmarshal(a, &x))
	require.NoError(t, json.Unmarshal(b, &y))
	out, err := json.Marshal(map[string]any{"keys": append(x.Keys, y.Keys...)})
	require.NoError(t, err)
	return out
}
