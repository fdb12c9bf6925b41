package authtest

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// AssertionType is the client_assertion_type of SMART Backend Services.
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Client is a SMART Backend Services client: it authenticates to a token
// endpoint with a private_key_jwt assertion.
type Client struct {
	// ID is the client_id, the iss and sub of its assertions.
	ID string
	// HTTPClient posts token requests; default http.DefaultClient.
	HTTPClient *http.Client
	// Now is the clock for Token's assertions; default time.Now.
	Now func() time.Time

	key crypto.Signer
	alg jose.SignatureAlgorithm
	kid string
}

// NewClient returns a client signing with a new P-384 key (ES384), and the
// JWKS JSON to register it with.
func NewClient(id string) (*Client, []byte) {
	return newClient(id, newEC(elliptic.P384()), jose.ES384)
}

// NewRSAClient returns a client signing with a new 2048-bit RSA key (RS384),
// and the JWKS JSON to register it with.
func NewRSAClient(id string) (*Client, []byte) {
	return newClient(id, newRSA(), jose.RS384)
}

func newClient(id string, key crypto.Signer, alg jose.SignatureAlgorithm) (*Client, []byte) {
	c := &Client{ID: id, key: key, alg: alg, kid: randomID()}
	return c, c.JWKS()
}

// JWKS returns the client's public key set as JSON.
func (c *Client) JWKS() []byte {
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{publicJWK(c.key, c.kid, string(c.alg))}})
	must(err)
	return b
}

// KeyID is the kid of the client's key.
func (c *Client) KeyID() string { return c.kid }

// PublicKeyPEM is the client's public key as PKIX PEM, the bytes an
// algorithm-confusion attacker would use as an HMAC secret.
func (c *Client) PublicKeyPEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(c.key.Public())
	must(err)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// AssertionClaims returns the claims of a valid assertion: iss = sub = ID,
// aud = tokenURL, jti, exp.
func (c *Client) AssertionClaims(tokenURL, jti string, exp time.Time) map[string]any {
	return map[string]any{"iss": c.ID, "sub": c.ID, "aud": tokenURL, "jti": jti, "exp": exp.Unix()}
}

// Assertion returns a signed client assertion for tokenURL.
func (c *Client) Assertion(tokenURL, jti string, exp time.Time) string {
	return c.Sign(c.AssertionClaims(tokenURL, jti, exp))
}

// Sign signs arbitrary claims with the client's key and kid, for tests that
// need a wrong claim under a valid signature.
func (c *Client) Sign(claims map[string]any) string {
	return sign(c.alg, c.key, c.kid, claims)
}

// SignWithHeaders signs claims with the client's key, adding extra
// protected header parameters (jku, for example).
func (c *Client) SignWithHeaders(claims map[string]any, headers map[string]any) string {
	opts := (&jose.SignerOptions{}).WithType("JWT")
	for k, v := range headers {
		opts = opts.WithHeader(jose.HeaderKey(k), v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: c.alg, Key: jose.JSONWebKey{Key: c.key, KeyID: c.kid}}, opts)
	must(err)
	payload, err := json.Marshal(claims)
	must(err)
	obj, err := s.Sign(payload)
	must(err)
	tok, err := obj.CompactSerialize()
	must(err)
	return tok
}

// SignWithoutKid signs claims with the client's key and no kid header.
func (c *Client) SignWithoutKid(claims map[string]any) string {
	return sign(c.alg, c.key, "", claims)
}

// TokenError is a token endpoint's refusal (RFC 6749 §5.2).
type TokenError struct {
	Status      int
	Code        string `json:"error"`
	Description string `json:"error_description"`
}

// Error describes the refusal with the endpoint's code and description.
func (e *TokenError) Error() string {
	return fmt.Sprintf("token endpoint: HTTP %d %s: %s", e.Status, e.Code, e.Description)
}

// Token obtains an access token for scope with a fresh assertion (new jti,
// exp four minutes ahead). A refusal is a *TokenError.
func (c *Client) Token(ctx context.Context, tokenURL, scope string) (string, error) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	tok, _, err := c.PostAssertion(ctx, tokenURL, c.Assertion(tokenURL, randomID(), now().Add(4*time.Minute)), scope)
	return tok, err
}

// PostAssertion sends a token request with the given assertion and returns
// the access token and granted scope.
func (c *Client) PostAssertion(ctx context.Context, tokenURL, assertion, scope string) (accessToken, grantedScope string, err error) {
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {AssertionType},
		"client_assertion":      {assertion},
		"scope":                 {scope},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		te := &TokenError{Status: resp.StatusCode}
		if err := json.Unmarshal(body, te); err != nil {
			return "", "", fmt.Errorf("token endpoint: HTTP %d, body not JSON", resp.StatusCode)
		}
		return "", "", te
	}
	var ok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		Scope       string `json:"scope"`
	}
	if err := json.Unmarshal(body, &ok); err != nil {
		return "", "", fmt.Errorf("token endpoint: %w", err)
	}
	if !strings.EqualFold(ok.TokenType, "bearer") || ok.AccessToken == "" {
		return "", "", fmt.Errorf("token endpoint: token_type %q", ok.TokenType)
	}
	return ok.AccessToken, ok.Scope, nil
}
