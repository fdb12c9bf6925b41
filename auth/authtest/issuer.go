package authtest

import (
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// Issuer is an external authorization server for mode jwt tests: a JWKS
// served over real HTTP by httptest, and a signer for RS*, PS*, ES256 and
// ES384 tokens. Rotate adds keys; Fail makes the JWKS answer 500.
type Issuer struct {
	srv     *httptest.Server
	fetches atomic.Int64
	failing atomic.Bool

	mu        sync.Mutex
	current   issuerKeys
	published []jose.JSONWebKey
}

type issuerKeys struct {
	rsa, p256, p384          crypto.Signer
	rsaKid, p256Kid, p384Kid string
}

func newIssuerKeys() issuerKeys {
	return issuerKeys{
		rsa: newRSA(), p256: newEC(elliptic.P256()), p384: newEC(elliptic.P384()),
		rsaKid: "rsa-" + randomID(), p256Kid: "p256-" + randomID(), p384Kid: "p384-" + randomID(),
	}
}

func (k issuerKeys) jwks() []jose.JSONWebKey {
	// No "alg" on the keys: one RSA key serves RS256, RS384 and PS256, as
	// many authorization servers publish them.
	return []jose.JSONWebKey{
		publicJWK(k.rsa, k.rsaKid, ""),
		publicJWK(k.p256, k.p256Kid, ""),
		publicJWK(k.p384, k.p384Kid, ""),
	}
}

// NewIssuer starts the JWKS server; it stops when the test ends.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	i := &Issuer{current: newIssuerKeys()}
	i.published = i.current.jwks()
	i.srv = httptest.NewServer(http.HandlerFunc(i.serveJWKS))
	t.Cleanup(i.srv.Close)
	return i
}

func (i *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/jwks.json" {
		http.NotFound(w, r)
		return
	}
	i.fetches.Add(1)
	if i.failing.Load() {
		http.Error(w, "unavailable", http.StatusInternalServerError)
		return
	}
	i.mu.Lock()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: i.published})
	i.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_, _ = w.Write(b)
}

// URL is the issuer identifier (the iss claim): the server's base URL.
func (i *Issuer) URL() string { return i.srv.URL }

// JWKSURL is where the key set is served.
func (i *Issuer) JWKSURL() string { return i.srv.URL + "/jwks.json" }

// Fetches counts the JWKS requests served so far.
func (i *Issuer) Fetches() int { return int(i.fetches.Load()) }

// Fail makes the JWKS endpoint answer 500 (true) or serve keys again.
func (i *Issuer) Fail(fail bool) { i.failing.Store(fail) }

// Rotate makes new keys current and publishes them next to the old ones,
// as an authorization server does during a key rollover.
func (i *Issuer) Rotate() {
	k := newIssuerKeys()
	i.mu.Lock()
	defer i.mu.Unlock()
	i.current = k
	i.published = append(i.published, k.jwks()...)
}

// Sign signs claims with the current key for alg: RS256, RS384, RS512,
// PS256, PS384 (RSA), ES256 (P-256), ES384 (P-384). Two attacks are
// forged too: "none" (unsigned, with the RSA kid) and "HS256" (HMAC keyed
// with the RSA public key's PEM, with the RSA kid).
func (i *Issuer) Sign(claims map[string]any, alg string) string {
	i.mu.Lock()
	k := i.current
	i.mu.Unlock()
	return k.sign(claims, alg)
}

// SignUnpublished signs with a fresh key whose kid the JWKS never lists.
// Only the key the algorithm needs is generated (RSA keys are slow).
func (i *Issuer) SignUnpublished(claims map[string]any, alg string) string {
	k := issuerKeys{rsaKid: "rsa-" + randomID(), p256Kid: "p256-" + randomID(), p384Kid: "p384-" + randomID()}
	switch alg {
	case "ES256":
		k.p256 = newEC(elliptic.P256())
	case "ES384":
		k.p384 = newEC(elliptic.P384())
	default:
		k.rsa = newRSA()
	}
	return k.sign(claims, alg)
}

// PublicKeyPEM is the current RSA public key as PKIX PEM.
func (i *Issuer) PublicKeyPEM() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	return pemPublic(i.current.rsa)
}

func pemPublic(k crypto.Signer) []byte {
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	must(err)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func (k issuerKeys) sign(claims map[string]any, alg string) string {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return sign(jose.SignatureAlgorithm(alg), k.rsa, k.rsaKid, claims)
	case "ES256":
		return sign(jose.ES256, k.p256, k.p256Kid, claims)
	case "ES384":
		return sign(jose.ES384, k.p384, k.p384Kid, claims)
	case "none":
		return Unsigned(claims, k.rsaKid)
	case "HS256", "HS384", "HS512":
		return HMAC(pemPublic(k.rsa), alg, k.rsaKid, claims)
	}
	panic("authtest.Issuer.Sign: unknown alg " + alg)
}
