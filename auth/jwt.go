package auth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Defaults of mode jwt.
const (
	DefaultSkew         = 60 * time.Second
	DefaultDomainsClaim = "qubs_domains"
	DefaultScopeClaim   = "scope"
	// maxSkew caps the configured skew: more than this no longer covers
	// clock drift, it extends every token's life.
	maxSkew = 5 * time.Minute
)

// JWTConfig configures mode jwt: bearer JWTs issued by an external
// authorization server.
type JWTConfig struct {
	// JWKSURL is the authorization server's key set (https; http only on
	// loopback).
	JWKSURL string
	// Issuer must equal the iss claim exactly.
	Issuer string
	// Audience: the aud claim must contain one of these.
	Audience []string
	// Algorithms allowed; default DefaultAlgorithms. Only asymmetric ones
	// are accepted: "none" and HS* make NewJWT fail.
	Algorithms []string
	// Skew is the clock tolerance for exp, nbf and iat; default 60 s, at
	// most 5 min.
	Skew time.Duration
	// DomainsClaim names the claim listing the QUBS domains (an array or a
	// space-separated string); default "qubs_domains". "*" is refused.
	DomainsClaim string
	// ScopeClaim names the scope claim (string or array); default "scope",
	// in which case an "scp" array is read when "scope" is absent.
	ScopeClaim string
	// HTTPClient fetches the JWKS; default a client with a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
	// JWKSRefreshInterval is the least time between two fetches triggered
	// by an unknown kid; default 1 min.
	JWKSRefreshInterval time.Duration
	// JWKSMaxAge is how long keys are used before a refetch; default 1 h.
	JWKSMaxAge time.Duration
}

type jwtAuth struct {
	cfg  JWTConfig
	algs []jose.SignatureAlgorithm
	jwks *jwksCache
}

// NewJWT returns the Authenticator of mode jwt. It checks the configuration
// only; the key set is fetched on first use, so that the bridge starts while
// the authorization server is briefly unreachable.
func NewJWT(cfg JWTConfig) (_ Authenticator, err error) {
	defer wrap(&err, "auth.NewJWT")
	if cfg.Issuer == "" {
		return nil, errors.New("issuer required")
	}
	if len(cfg.Audience) == 0 {
		return nil, errors.New("audience required: without it a token minted for another service would be accepted")
	}
	for _, a := range cfg.Audience {
		if a == "" {
			return nil, errors.New("empty audience")
		}
	}
	algs, err := signatureAlgs(cfg.Algorithms)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.Skew == 0:
		cfg.Skew = DefaultSkew
	case cfg.Skew < 0 || cfg.Skew > maxSkew:
		return nil, fmt.Errorf("skew %v: want between 0 and %v", cfg.Skew, maxSkew)
	}
	if cfg.DomainsClaim == "" {
		cfg.DomainsClaim = DefaultDomainsClaim
	}
	if cfg.ScopeClaim == "" {
		cfg.ScopeClaim = DefaultScopeClaim
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cache, err := newJWKSCache(cfg.JWKSURL, cfg.HTTPClient, cfg.Now, cfg.JWKSRefreshInterval, cfg.JWKSMaxAge)
	if err != nil {
		return nil, err
	}
	return &jwtAuth{cfg: cfg, algs: algs, jwks: cache}, nil
}

// Authenticate implements Authenticator.
func (a *jwtAuth) Authenticate(r *http.Request) (*Principal, error) {
	tok, err := requestToken(r)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	c, _, err := verifySigned(tok, a.algs, func(kid string) ([]jose.JSONWebKey, error) {
		return a.jwks.candidates(ctx, kid)
	})
	if err != nil {
		return nil, invalidToken(err.Error())
	}
	if err := checkTimes(c, a.cfg.Issuer, a.cfg.Audience, a.cfg.Now(), a.cfg.Skew); err != nil {
		return nil, invalidToken(err.Error())
	}
	p, err := principalFromClaims(c, "jwt", a.cfg.ScopeClaim, a.cfg.DomainsClaim)
	if err != nil {
		return nil, invalidToken(err.Error())
	}
	return p, nil
}

// principalFromClaims builds the Principal of a verified token.
func principalFromClaims(c *tokenClaims, method, scopeClaim, domainsClaim string) (*Principal, error) {
	sub := c.Subject
	if sub == "" {
		sub = claimString(c.Extra["client_id"])
	}
	if sub == "" {
		return nil, errors.New("token has no sub")
	}
	raw := c.Extra[scopeClaim]
	if raw == nil && scopeClaim == DefaultScopeClaim {
		raw = c.Extra["scp"]
	}
	items, ok := stringOrList(raw)
	if !ok {
		return nil, errors.New("malformed scope claim")
	}
	scopes, err := ParseScopes(strings.Join(items, " "))
	if err != nil {
		return nil, errors.New("malformed scope claim")
	}
	domains, err := claimDomains(c.Extra[domainsClaim])
	if err != nil {
		return nil, err
	}
	return &Principal{Subject: sub, Method: method, Domains: domains, Scopes: scopes, TokenID: c.ID}, nil
}
