package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// SMART Backend Services constants (SMART App Launch 2.x, "Backend Services").
const (
	// AssertionType is the only client_assertion_type accepted (RFC 7523).
	AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// DefaultTokenTTL is the life of an issued access token.
	DefaultTokenTTL = 5 * time.Minute
	// maxTokenTTL keeps access tokens short-lived whatever the config says.
	maxTokenTTL = time.Hour
	// maxAssertionLife: "exp ... SHALL be no more than five minutes in the
	// future" (SMART Backend Services, authentication JWT).
	maxAssertionLife = 5 * time.Minute
	// maxFormBytes bounds a token request body.
	maxFormBytes = 64 << 10
	// maxJTI bounds the jti we store.
	maxJTI = 256
)

// assertionAlgs are the algorithms SMART Backend Services requires servers
// to support for client assertions; no other is accepted.
var assertionAlgs = []jose.SignatureAlgorithm{jose.RS384, jose.ES384}

// accessTokenAlg is the algorithm of the bridge's own access tokens.
var accessTokenAlg = []jose.SignatureAlgorithm{jose.ES256}

// SMARTClient is one entry of the SMART clients file (a JSON array).
type SMARTClient struct {
	// ClientID is the client's id: iss and sub of its assertions.
	ClientID string `json:"client_id"`
	// Name is a human label, optional.
	Name string `json:"name,omitempty"`
	// JWKS is the client's public key set, inline; or
	JWKS json.RawMessage `json:"jwks,omitempty"`
	// JWKSURI is where the client publishes its key set (https).
	JWKSURI string `json:"jwks_uri,omitempty"`
	// Scope is the space-separated set of SMART scopes the client may get.
	Scope string `json:"scope"`
	// Domains are the QUBS domains its tokens reach; "*" is refused.
	Domains []string `json:"domains"`
}

// SMARTConfig configures mode smart.
type SMARTConfig struct {
	// ClientsFile is the JSON array of SMARTClient.
	ClientsFile string
	// SigningKeyFile is a PEM P-256 private key (PKCS#8 or SEC 1) signing
	// the access tokens. Empty: a key is generated at start, so tokens do
	// not survive a restart and each replica accepts only its own tokens;
	// several replicas need one shared key file.
	SigningKeyFile string
	// TokenURL is the absolute token endpoint URL; clients must use it as
	// the aud of their assertions.
	TokenURL string
	// TokenTTL is the life of access tokens; default 5 min, at most 1 h.
	TokenTTL time.Duration
	// Replay records assertion jtis; default NewMemoryReplayCache (one
	// replica only).
	Replay ReplayCache
	// HTTPClient fetches clients' jwks_uri; default a 10 s timeout client.
	HTTPClient *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Issuer is the iss and aud of issued access tokens; default TokenURL.
	Issuer string
	// Logger, if set, records issued tokens and refusals (client id, error
	// code, jti of the access token); never tokens, assertions or keys.
	Logger *slog.Logger
	// ResourceTypes are the types the FHIR server serves; a token request
	// naming another type is refused with invalid_scope (SMART BDT
	// Auth-13). Empty accepts any well-formed type.
	ResourceTypes []string
}

// SMART is the bridge's own SMART Backend Services authorization server:
// TokenHandler issues access tokens, Authenticator verifies them.
type SMART struct {
	cfg     SMARTConfig
	clients map[string]*smartClient
	signer  jose.Signer
	pub     jose.JSONWebKey
	log     *slog.Logger
}

type smartClient struct {
	id      string
	keys    []jose.JSONWebKey // inline keys
	jwks    *jwksCache        // or keys from jwks_uri
	jwksURI string
	scopes  []Scope
	domains []string
}

// NewSMART loads the clients file and the signing key. A client entry with
// an unknown field, a bad id, both or neither of jwks and jwks_uri, a
// private or unusable key, no scope, no domain or "*" refuses the file.
func NewSMART(cfg SMARTConfig) (_ *SMART, err error) {
	defer wrap(&err, "auth.NewSMART")
	u, err := url.Parse(cfg.TokenURL)
	if err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("token URL %q: want an absolute http(s) URL", cfg.TokenURL)
	}
	if cfg.Issuer == "" {
		cfg.Issuer = cfg.TokenURL
	}
	switch {
	case cfg.TokenTTL == 0:
		cfg.TokenTTL = DefaultTokenTTL
	case cfg.TokenTTL < 0 || cfg.TokenTTL > maxTokenTTL:
		return nil, fmt.Errorf("token TTL %v: want between 0 and %v", cfg.TokenTTL, maxTokenTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Replay == nil {
		cfg.Replay = newMemoryReplayCache(cfg.Now)
	}
	s := &SMART{cfg: cfg, log: cfg.Logger}
	if s.clients, err = loadSMARTClients(cfg); err != nil {
		return nil, err
	}
	key, err := loadSigningKey(cfg.SigningKeyFile)
	if err != nil {
		return nil, err
	}
	s.pub = jose.JSONWebKey{Key: key.Public(), Algorithm: string(jose.ES256), Use: "sig"}
	tp, err := s.pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	// The kid is the RFC 7638 thumbprint: replicas sharing a key file agree
	// on it, and a new key gets a new kid without configuration.
	s.pub.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	s.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: s.pub.KeyID}},
		(&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		return nil, err
	}
	return s, nil
}

func loadSMARTClients(cfg SMARTConfig) (map[string]*smartClient, error) {
	data, err := os.ReadFile(cfg.ClientsFile)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var entries []SMARTClient
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("clients file %s: want a JSON array of {client_id, jwks or jwks_uri, scope, domains}: %w", cfg.ClientsFile, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("clients file %s: trailing data after the JSON array", cfg.ClientsFile)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("clients file %s: no clients", cfg.ClientsFile)
	}
	out := map[string]*smartClient{}
	for i, e := range entries {
		c, err := e.compile(cfg)
		if err != nil {
			return nil, fmt.Errorf("clients file %s: entry %d (%q): %w", cfg.ClientsFile, i, clip(e.ClientID), err)
		}
		if out[c.id] != nil {
			return nil, fmt.Errorf("clients file %s: duplicate client_id %q", cfg.ClientsFile, c.id)
		}
		out[c.id] = c
	}
	return out, nil
}

func (e SMARTClient) compile(cfg SMARTConfig) (*smartClient, error) {
	if !validName.MatchString(e.ClientID) {
		return nil, errors.New("client_id: want 1-128 characters of A-Z a-z 0-9 . _ @ : -")
	}
	c := &smartClient{id: e.ClientID}
	hasJWKS := len(e.JWKS) > 0 && string(e.JWKS) != "null"
	switch {
	case hasJWKS == (e.JWKSURI != ""):
		return nil, errors.New("want exactly one of jwks and jwks_uri")
	case hasJWKS:
		if err := refusePrivate(e.JWKS); err != nil {
			return nil, err
		}
		keys, err := parseJWKS(e.JWKS)
		if err != nil {
			return nil, err
		}
		keys = slices.DeleteFunc(keys, func(k jose.JSONWebKey) bool { return !assertionKey(k) })
		if len(keys) == 0 {
			return nil, errors.New("jwks: no RSA (2048 bits or more) or P-384 public key with a kid")
		}
		c.keys = keys
	default:
		cache, err := newJWKSCache(e.JWKSURI, cfg.HTTPClient, cfg.Now, 0, 0)
		if err != nil {
			return nil, err
		}
		c.jwks, c.jwksURI = cache, e.JWKSURI
	}
	scopes, err := ParseScopes(e.Scope)
	if err != nil {
		return nil, fmt.Errorf("scope: %w", err)
	}
	if len(scopes) == 0 {
		return nil, errors.New("scope: no resource scope (want for example system/ServiceRequest.rs)")
	}
	c.scopes = scopes
	if len(e.Domains) == 0 {
		return nil, errors.New("domains: at least one domain required")
	}
	for _, d := range e.Domains {
		if d == "*" {
			return nil, errors.New(`domains: "*" is refused; list the domains explicitly`)
		}
		if !validDomain.MatchString(d) {
			return nil, fmt.Errorf("domains: malformed domain %q", clip(d))
		}
	}
	c.domains = slices.Compact(slices.Sorted(slices.Values(e.Domains)))
	return c, nil
}

// refusePrivate fails if an inline key set carries private key material:
// the file is configuration, often copied around, and a private key in it
// would let anyone who reads it impersonate the client.
func refusePrivate(raw json.RawMessage) error {
	var set struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		return fmt.Errorf("jwks: %w", err)
	}
	for _, k := range set.Keys {
		for _, p := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
			if _, ok := k[p]; ok {
				return errors.New("jwks: holds private or symmetric key material; register the public key only")
			}
		}
	}
	return nil
}

// assertionKey reports whether k can verify an RS384 or ES384 assertion and
// has the kid SMART requires in the assertion header.
func assertionKey(k jose.JSONWebKey) bool {
	if k.KeyID == "" {
		return false
	}
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		return key.N.BitLen() >= minRSABits
	case *ecdsa.PublicKey:
		return key.Curve == elliptic.P384()
	}
	return false
}

// loadSigningKey reads a PEM P-256 private key, or generates one when path
// is empty.
func loadSigningKey(path string) (*ecdsa.PrivateKey, error) {
	if path == "" {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("signing key %s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("signing key %s: PEM type %q, want PRIVATE KEY or EC PRIVATE KEY", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("signing key %s: want an EC P-256 key (ES256)", path)
	}
	return ec, nil
}

// GenerateSigningKey returns a new P-256 private key as PKCS#8 PEM, the
// format of SMARTConfig.SigningKeyFile.
func GenerateSigningKey() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ScopesSupported returns every scope some registered client may obtain,
// sorted, for the scopes_supported of the SMART configuration.
func (s *SMART) ScopesSupported() []string {
	var all []Scope
	for _, c := range s.clients {
		for _, sc := range c.scopes {
			all = addScope(all, sc)
		}
	}
	out := []string{}
	for _, sc := range sortedScopes(all) {
		out = append(out, sc.String())
	}
	return out
}

// JWKS returns the public key set of the access tokens, for operators and
// for resource servers other than the bridge.
func (s *SMART) JWKS() []byte {
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{s.pub}})
	return b
}

// SMARTConfiguration returns the /.well-known/smart-configuration document
// (SMART App Launch 2.x §2.1) of a FHIR base whose token endpoint is
// tokenURL. It lists only what the bridge implements, Backend Services:
// no authorization endpoint, hence no PKCE methods either.
func SMARTConfiguration(tokenURL string, scopes []string) map[string]any {
	if scopes == nil {
		scopes = []string{}
	}
	return map[string]any{
		"token_endpoint":                                   tokenURL,
		"grant_types_supported":                            []string{"client_credentials"},
		"token_endpoint_auth_methods_supported":            []string{"private_key_jwt"},
		"token_endpoint_auth_signing_alg_values_supported": []string{"RS384", "ES384"},
		"scopes_supported":                                 scopes,
		"capabilities":                                     []string{"client-confidential-asymmetric"},
	}
}

// oauthError is an RFC 6749 §5.2 error response.
type oauthError struct {
	status int
	// challenge is the WWW-Authenticate scheme of a 401 (RFC 6749 §5.2:
	// the one the client tried).
	challenge string
	Code      string `json:"error"`
	Desc      string `json:"error_description,omitempty"`
}

// challengeScheme names the scheme a client tried, normalised; anything
// odd becomes Basic, the one RFC 6749 §2.3.1 defines for clients.
func challengeScheme(s string) string {
	if strings.EqualFold(s, "Bearer") {
		return "Bearer"
	}
	return "Basic"
}

// unknownType returns the first requested resource type the server does
// not serve, if any.
func (s *SMART) unknownType(requested []Scope) (string, bool) {
	if len(s.cfg.ResourceTypes) == 0 {
		return "", false
	}
	for _, sc := range requested {
		if sc.Resource != "*" && !slices.Contains(s.cfg.ResourceTypes, sc.Resource) {
			return sc.Resource, true
		}
	}
	return "", false
}

func (e *oauthError) Error() string { return e.Code + ": " + e.Desc }

func errInvalidClient(desc string) *oauthError {
	return &oauthError{status: http.StatusUnauthorized, Code: "invalid_client", Desc: desc}
}

func errInvalidRequest(desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, Code: "invalid_request", Desc: desc}
}

// tokenResponse is the RFC 6749 §5.1 success response.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
}

// TokenHandler returns the token endpoint: POST
// application/x-www-form-urlencoded with grant_type=client_credentials,
// client_assertion_type=AssertionType, client_assertion and scope.
// Responses are JSON and never cached (RFC 6749 §5.1).
func (s *SMART) TokenHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		resp, client, err := s.token(w, r)
		if err != nil {
			var oe *oauthError
			attrs := []slog.Attr{slog.String("client_id", client)}
			if !errors.As(err, &oe) {
				// Only the replay cache fails this way; its errors name
				// no credential, so the cause is logged, not returned.
				oe = &oauthError{status: http.StatusInternalServerError, Code: "server_error", Desc: "internal error"}
				attrs = append(attrs, slog.String("cause", err.Error()))
			}
			if s.log != nil {
				attrs = append(attrs, slog.String("error", oe.Code), slog.String("error_description", oe.Desc))
				s.log.LogAttrs(r.Context(), slog.LevelWarn, "token request refused", attrs...)
			}
			if oe.status == http.StatusMethodNotAllowed {
				w.Header().Set("Allow", http.MethodPost)
			}
			if oe.challenge != "" {
				w.Header().Set("WWW-Authenticate", oe.challenge+` realm="token", error="invalid_client"`)
			}
			writeJSON(w, oe.status, oe)
			return
		}
		writeJSON(w, http.StatusOK, resp)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// token handles one token request. client is the registered client id
// once known (for the log), empty before: an unregistered id sent by an
// attacker is not logged.
func (s *SMART) token(w http.ResponseWriter, r *http.Request) (_ *tokenResponse, client string, _ error) {
	if r.Method != http.MethodPost {
		return nil, "", &oauthError{status: http.StatusMethodNotAllowed, Code: "invalid_request", Desc: "use POST"}
	}
	// SMART Backend Services authenticates clients by private_key_jwt
	// only; RFC 6749 §5.2 has a client that tried the Authorization header
	// told so with a 401 and a challenge in its own scheme.
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, _, _ := strings.Cut(h, " ")
		return nil, "", &oauthError{status: http.StatusUnauthorized, Code: "invalid_client",
			Desc: "authenticate with a private_key_jwt client assertion, not the Authorization header", challenge: challengeScheme(scheme)}
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, "", errInvalidRequest("want Content-Type application/x-www-form-urlencoded")
	}
	// Credentials in the URL end up in access logs (RFC 6749 §2.3.1).
	if r.URL.RawQuery != "" {
		return nil, "", errInvalidRequest("parameters must be sent in the request body")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return nil, "", errInvalidRequest("malformed form body")
	}
	form := r.PostForm
	// RFC 6749 §3.2: parameters must not be included more than once.
	for k, v := range form {
		if len(v) > 1 {
			return nil, "", errInvalidRequest("parameter " + clip(quoteSafe(k)) + " repeated")
		}
	}
	switch gt := form.Get("grant_type"); gt {
	case "":
		return nil, "", errInvalidRequest("grant_type required")
	case "client_credentials":
	default:
		return nil, "", &oauthError{status: http.StatusBadRequest, Code: "unsupported_grant_type", Desc: "only client_credentials is supported"}
	}
	// SMART Backend Services: every authentication failure is invalid_client
	// (and RFC 7523 §3.2 says the same for client assertions). No error
	// here is invalid_grant: client_credentials carries no grant to be
	// invalid.
	if form.Get("client_assertion_type") != AssertionType {
		return nil, "", errInvalidClient("client_assertion_type must be " + AssertionType)
	}
	assertion := form.Get("client_assertion")
	if assertion == "" {
		return nil, "", errInvalidClient("client_assertion required")
	}
	c, err := s.authenticateClient(r, assertion, form.Get("client_id"))
	if err != nil {
		id := ""
		if c != nil {
			id = c.id // a registered client whose assertion failed: worth an audit line
		}
		return nil, id, err
	}
	requested, err := ParseScopes(form.Get("scope"))
	if err != nil {
		return nil, c.id, &oauthError{status: http.StatusBadRequest, Code: "invalid_scope", Desc: "malformed scope"}
	}
	if len(requested) == 0 {
		// openid, launch and the like grant nothing here (SMART BDT
		// Auth-17): say so rather than answer "none granted".
		return nil, c.id, &oauthError{status: http.StatusBadRequest, Code: "invalid_scope", Desc: "no resource scope requested (system/Type.perms)"}
	}
	if t, ok := s.unknownType(requested); ok {
		return nil, c.id, &oauthError{status: http.StatusBadRequest, Code: "invalid_scope", Desc: "no resource type " + clip(t) + " is served here"}
	}
	granted := IntersectScopes(requested, c.scopes)
	if len(granted) == 0 {
		return nil, c.id, &oauthError{status: http.StatusBadRequest, Code: "invalid_scope", Desc: "none of the requested scopes is granted to this client"}
	}
	tok, jti, err := s.issue(c, granted)
	if err != nil {
		return nil, c.id, err
	}
	scope := FormatScopes(granted)
	if s.log != nil {
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "access token issued",
			slog.String("client_id", c.id), slog.String("scope", scope), slog.String("jti", jti))
	}
	return &tokenResponse{AccessToken: tok, TokenType: "bearer", ExpiresIn: int(s.cfg.TokenTTL / time.Second), Scope: scope}, c.id, nil
}

// authenticateClient verifies a client assertion per SMART Backend
// Services ("Authenticating to the token endpoint") and claims its jti. On
// failure it still returns the client once the issuer names a registered
// one, for the log.
func (s *SMART) authenticateClient(r *http.Request, assertion, formClientID string) (*smartClient, error) {
	// The issuer is read before the signature is checked, only to pick the
	// client's keys; nothing else is trusted until verifySigned succeeds.
	unverified, err := jose.ParseSignedCompact(assertion, assertionAlgs)
	if err != nil {
		var alg *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &alg) {
			return nil, errInvalidClient("assertion algorithm not allowed (RS384 or ES384)")
		}
		return nil, errInvalidClient("malformed client assertion")
	}
	var ids struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
	}
	if json.Unmarshal(unverified.UnsafePayloadWithoutVerification(), &ids) != nil {
		return nil, errInvalidClient("malformed client assertion")
	}
	if ids.Iss == "" || ids.Iss != ids.Sub {
		return nil, errInvalidClient("assertion iss and sub must both be the client_id")
	}
	c := s.clients[ids.Iss]
	if c == nil {
		return nil, errInvalidClient("unknown client")
	}
	if formClientID != "" && formClientID != c.id {
		return c, errInvalidClient("client_id does not match the assertion")
	}
	h := unverified.Signatures[0].Header
	if h.KeyID == "" {
		return c, errInvalidClient("assertion header must carry kid")
	}
	// A jku pointing elsewhere than the registered jwks_uri would make us
	// fetch keys from wherever the caller likes; it is not followed.
	if jku, ok := h.ExtraHeaders["jku"]; ok && (c.jwksURI == "" || jku != c.jwksURI) {
		return c, errInvalidClient("assertion jku does not match the registered jwks_uri")
	}
	ctx := r.Context()
	claims, _, err := verifySigned(assertion, assertionAlgs, func(kid string) ([]jose.JSONWebKey, error) {
		if c.jwks != nil {
			keys, err := c.jwks.candidates(ctx, kid)
			return slices.DeleteFunc(keys, func(k jose.JSONWebKey) bool { return !assertionKey(k) }), err
		}
		var keys []jose.JSONWebKey
		for _, k := range c.keys {
			if k.KeyID == kid {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			return nil, errUnknownKid
		}
		return keys, nil
	})
	if err != nil {
		return c, errInvalidClient("client assertion: " + err.Error())
	}
	now := s.cfg.Now()
	if err := checkTimes(claims, c.id, []string{s.cfg.TokenURL}, now, DefaultSkew); err != nil {
		return c, errInvalidClient("client assertion: " + err.Error())
	}
	if claims.Subject != c.id {
		return c, errInvalidClient("assertion iss and sub must both be the client_id")
	}
	exp := claims.Expiry.Time()
	if exp.After(now.Add(maxAssertionLife + DefaultSkew)) {
		return c, errInvalidClient("client assertion: exp more than five minutes ahead")
	}
	if claims.ID == "" || len(claims.ID) > maxJTI {
		return c, errInvalidClient("client assertion: jti required (at most 256 characters)")
	}
	fresh, err := s.cfg.Replay.ClaimJTI(ctx, c.id, claims.ID, exp.Add(DefaultSkew))
	if err != nil {
		return c, fmt.Errorf("replay cache: %w", err)
	}
	if !fresh {
		return c, errInvalidClient("client assertion: jti already used")
	}
	return c, nil
}

// issue signs an access token for c with the granted scopes.
func (s *SMART) issue(c *smartClient, granted []Scope) (tok, jti string, err error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	jti = base64.RawURLEncoding.EncodeToString(b)
	now := s.cfg.Now()
	claims := map[string]any{
		"iss":               s.cfg.Issuer,
		"sub":               c.id,
		"aud":               s.cfg.Issuer,
		"client_id":         c.id,
		"scope":             FormatScopes(granted),
		DefaultDomainsClaim: c.domains,
		"jti":               jti,
		"iat":               now.Unix(),
		"exp":               now.Add(s.cfg.TokenTTL).Unix(),
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", "", err
	}
	obj, err := s.signer.Sign(payload)
	if err != nil {
		return "", "", err
	}
	tok, err = obj.CompactSerialize()
	return tok, jti, err
}

// Authenticator returns the Authenticator that verifies the access tokens
// this SMART server issued: ES256 with the bridge's key, iss and aud equal
// to the issuer, exp with 60 s skew, and a client still registered.
func (s *SMART) Authenticator() Authenticator { return smartAuth{s} }

type smartAuth struct{ s *SMART }

// Authenticate implements Authenticator for the bridge-issued tokens.
func (a smartAuth) Authenticate(r *http.Request) (*Principal, error) {
	tok, err := requestToken(r)
	if err != nil {
		return nil, err
	}
	s := a.s
	c, _, err := verifySigned(tok, accessTokenAlg, func(kid string) ([]jose.JSONWebKey, error) {
		if kid != s.pub.KeyID {
			return nil, errUnknownKid
		}
		return []jose.JSONWebKey{s.pub}, nil
	})
	if err != nil {
		return nil, invalidToken(err.Error())
	}
	if err := checkTimes(c, s.cfg.Issuer, []string{s.cfg.Issuer}, s.cfg.Now(), DefaultSkew); err != nil {
		return nil, invalidToken(err.Error())
	}
	if s.clients[c.Subject] == nil {
		return nil, invalidToken("client no longer registered")
	}
	p, err := principalFromClaims(c, "smart", DefaultScopeClaim, DefaultDomainsClaim)
	if err != nil {
		return nil, invalidToken(err.Error())
	}
	return p, nil
}
