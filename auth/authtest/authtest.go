// Package authtest gives other packages' tests real credentials for the
// bridge's auth modes: a SMART Backend Services client (Client) that signs
// client assertions and fetches access tokens over HTTP, and an external
// JWT issuer (Issuer) with a JWKS served by httptest. Both can also forge
// the classic attacks (alg none, HMAC keyed with the public key) so that
// the refusal of each is tested against real tokens.
package authtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"

	jose "github.com/go-jose/go-jose/v4"
)

// Unsigned returns an alg "none" JWT of claims: header.payload. with an
// empty signature (RFC 7519 §6).
func Unsigned(claims map[string]any, kid string) string {
	h := map[string]any{"alg": "none", "typ": "JWT"}
	if kid != "" {
		h["kid"] = kid
	}
	return segment(h) + "." + segment(claims) + "."
}

// HMAC returns a JWT of claims signed with HS256, HS384 or HS512 keyed with
// secret: with a public key as secret, the algorithm-confusion attack.
func HMAC(secret []byte, alg, kid string, claims map[string]any) string {
	var hf func() hash.Hash
	switch alg {
	case "HS256":
		hf = sha256.New
	case "HS384":
		hf = sha512.New384
	case "HS512":
		hf = sha512.New
	default:
		panic("authtest.HMAC: unknown alg " + alg)
	}
	h := map[string]any{"alg": alg, "typ": "JWT"}
	if kid != "" {
		h["kid"] = kid
	}
	signing := segment(h) + "." + segment(claims)
	m := hmac.New(hf, secret)
	m.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Tamper returns tok with one claim of its payload changed and the
// original signature kept, so only the signature check can catch it.
func Tamper(tok, claim string, value any) string {
	parts := splitJWT(tok)
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	must(err)
	var claims map[string]any
	must(json.Unmarshal(raw, &claims))
	claims[claim] = value
	return parts[0] + "." + segment(claims) + "." + parts[2]
}

func splitJWT(tok string) [3]string {
	var out [3]string
	i := 0
	start := 0
	for j := 0; j < len(tok); j++ {
		if tok[j] == '.' {
			if i >= 2 {
				panic("authtest: not a compact JWS")
			}
			out[i] = tok[start:j]
			i++
			start = j + 1
		}
	}
	if i != 2 {
		panic("authtest: not a compact JWS")
	}
	out[2] = tok[start:]
	return out
}

func segment(v any) string {
	b, err := json.Marshal(v)
	must(err)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sign signs claims with key under alg, with kid and typ in the header.
func sign(alg jose.SignatureAlgorithm, key crypto.Signer, kid string, claims map[string]any) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	must(err)
	payload, err := json.Marshal(claims)
	must(err)
	obj, err := s.Sign(payload)
	must(err)
	tok, err := obj.CompactSerialize()
	must(err)
	return tok
}

func newEC(c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	must(err)
	return k
}

func newRSA() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	return k
}

func randomID() string {
	b := make([]byte, 12)
	_, err := rand.Read(b)
	must(err)
	return base64.RawURLEncoding.EncodeToString(b)
}

func publicJWK(key crypto.Signer, kid, alg string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: key.Public(), KeyID: kid, Algorithm: alg, Use: "sig"}
}

// must panics on errors that only a broken crypto/rand or a bug in this
// package can cause; helpers stay usable without a *testing.T.
func must(err error) {
	if err != nil {
		panic(fmt.Sprintf("authtest: %v", err))
	}
}
