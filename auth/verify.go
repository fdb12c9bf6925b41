package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// asymmetricAlgs are the only algorithms any mode accepts. "none" and the
// HMAC family are absent on purpose: with a JWKS of public keys, accepting
// HS256 would let anyone sign with the public key as the HMAC secret.
var asymmetricAlgs = map[string]jose.SignatureAlgorithm{
	"RS256": jose.RS256, "RS384": jose.RS384, "RS512": jose.RS512,
	"PS256": jose.PS256, "PS384": jose.PS384, "PS512": jose.PS512,
	"ES256": jose.ES256, "ES384": jose.ES384, "ES512": jose.ES512,
	"EdDSA": jose.EdDSA,
}

// DefaultAlgorithms are the algorithms mode jwt accepts unless configured.
var DefaultAlgorithms = []string{"RS256", "RS384", "ES256", "ES384", "PS256"}

func signatureAlgs(names []string) ([]jose.SignatureAlgorithm, error) {
	if len(names) == 0 {
		names = DefaultAlgorithms
	}
	var out []jose.SignatureAlgorithm
	for _, n := range names {
		a, ok := asymmetricAlgs[n]
		if !ok {
			return nil, fmt.Errorf("algorithm %q refused: only asymmetric signatures (RS*, PS*, ES*, EdDSA) are accepted", n)
		}
		out = append(out, a)
	}
	return out, nil
}

// tokenClaims are the registered claims plus the raw rest, for claims whose
// names are configurable.
type tokenClaims struct {
	jwt.Claims
	Extra map[string]json.RawMessage
}

// verifySigned parses a compact JWS, refusing any algorithm outside algs
// before touching a key, finds the candidate keys by kid and returns the
// claims of the first key whose signature verifies. The description of a
// failure is fixed text.
func verifySigned(tok string, algs []jose.SignatureAlgorithm, keys func(kid string) ([]jose.JSONWebKey, error)) (*tokenClaims, jose.Header, error) {
	parsed, err := jose.ParseSignedCompact(tok, algs)
	if err != nil {
		var alg *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &alg) {
			return nil, jose.Header{}, errors.New("signature algorithm not allowed")
		}
		return nil, jose.Header{}, errors.New("malformed token")
	}
	if len(parsed.Signatures) != 1 {
		return nil, jose.Header{}, errors.New("malformed token")
	}
	h := parsed.Signatures[0].Header
	candidates, err := keys(h.KeyID)
	if err != nil {
		return nil, h, errors.New("unknown signing key")
	}
	for _, k := range candidates {
		// A key that names its algorithm may be used with that one only
		// (RFC 7517 §4.4), so an RSA key meant for RS256 cannot be used
		// for PS256 and the other way round.
		if k.Algorithm != "" && k.Algorithm != h.Algorithm {
			continue
		}
		payload, err := parsed.Verify(k.Key)
		if err != nil {
			continue
		}
		var c tokenClaims
		if json.Unmarshal(payload, &c.Claims) != nil || json.Unmarshal(payload, &c.Extra) != nil {
			return nil, h, errors.New("malformed claims")
		}
		return &c, h, nil
	}
	return nil, h, errors.New("bad signature")
}

// checkTimes validates exp (required), nbf and iat with skew, and the
// issuer and audience when given. It maps go-jose's errors to fixed texts.
func checkTimes(c *tokenClaims, issuer string, audience []string, now time.Time, skew time.Duration) error {
	if c.Expiry == nil {
		return errors.New("token has no exp")
	}
	err := c.ValidateWithLeeway(jwt.Expected{Issuer: issuer, AnyAudience: audience, Time: now}, skew)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return errors.New("wrong issuer")
	case errors.Is(err, jwt.ErrInvalidAudience):
		return errors.New("wrong audience")
	case errors.Is(err, jwt.ErrExpired):
		return errors.New("token expired")
	case errors.Is(err, jwt.ErrNotValidYet):
		return errors.New("token not yet valid")
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return errors.New("token issued in the future")
	default:
		return errors.New("invalid claims")
	}
}

// stringOrList decodes a claim that is either a space-separated string or
// an array of strings (RFC 8693 scope vs. Azure/Okta scp). ok is false when
// the claim has another JSON type.
func stringOrList(raw json.RawMessage) (items []string, ok bool) {
	if raw == nil {
		return nil, true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return strings.Fields(s), true
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		var out []string
		for _, item := range list {
			out = append(out, strings.Fields(item)...)
		}
		return out, true
	}
	if string(raw) == "null" {
		return nil, true
	}
	return nil, false
}

// claimDomains reads a domains claim. The wildcard "*" is refused in
// tokens: a hospital connects the bridge only if access is narrow, and a
// misconfigured authorization server must not open every domain.
func claimDomains(raw json.RawMessage) ([]string, error) {
	items, ok := stringOrList(raw)
	if !ok {
		return nil, errors.New("malformed domains claim")
	}
	var out []string
	for _, d := range items {
		if d == "*" {
			return nil, errors.New("wildcard domain not accepted")
		}
		if !validDomain.MatchString(d) {
			return nil, errors.New("malformed domains claim")
		}
		out = append(out, d)
	}
	return out, nil
}

func claimString(raw json.RawMessage) string {
	var s string
	if raw != nil && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}
