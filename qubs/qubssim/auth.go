package qubssim

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// jwtClaims are the claims of the simulator's tokens. QUBS documents only
// that authorization is "domain-scoped via claims"; the names follow AWS
// Cognito (token_use, client_id), which the token endpoint's shape suggests,
// plus a "domains" claim.
type jwtClaims struct {
	Iss      string   `json:"iss"`
	Sub      string   `json:"sub"`
	Aud      string   `json:"aud"`
	ClientID string   `json:"client_id"`
	TokenUse string   `json:"token_use"` // "access" or "id"; only access tokens open the API
	Domains  []string `json:"domains"`
	Iat      int64    `json:"iat"`
	Exp      int64    `json:"exp"`
	Jti      string   `json:"jti"`
}

const jwtAudience = "qubs-integrations"

var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

func (s *Sim) signJWT(c jwtClaims) string {
	payload, _ := json.Marshal(c)
	signing := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(payload)
	m := hmac.New(sha256.New, s.jwtKey)
	m.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// verifyJWT checks signature, algorithm, use and expiry against the clock.
// The reason it returns is safe to show (it never holds the token).
func (s *Sim) verifyJWT(tok string) (jwtClaims, string) {
	var c jwtClaims
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return c, "bearer token is not a JWT"
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(hb, &hdr) != nil || hdr.Alg != "HS256" {
		return c, "bearer token has an unsupported header"
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(parts[2])
	m := hmac.New(sha256.New, s.jwtKey)
	m.Write([]byte(parts[0] + "." + parts[1]))
	if err != nil || !hmac.Equal(sig, m.Sum(nil)) {
		return c, "bearer token signature is invalid"
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(pb, &c) != nil {
		return c, "bearer token claims are malformed"
	}
	if c.TokenUse != "access" {
		return c, "bearer token is not an access token"
	}
	if s.clock.Now().Unix() >= c.Exp {
		return c, "bearer token has expired"
	}
	return c, ""
}

// authorize checks the bearer token and that it covers domain. It answers
// 401 (with WWW-Authenticate, RFC 6750) or 403 itself and returns false then.
func (s *Sim) authorize(w http.ResponseWriter, r *http.Request, domain string) (jwtClaims, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="qubs"`)
		s.problem(w, r, http.StatusUnauthorized, "a bearer token is required")
		return jwtClaims{}, false
	}
	c, reason := s.verifyJWT(tok)
	if reason != "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="qubs", error="invalid_token"`)
		s.problem(w, r, http.StatusUnauthorized, reason)
		return jwtClaims{}, false
	}
	if !slices.Contains(c.Domains, domain) {
		s.problem(w, r, http.StatusForbidden, "the token is not scoped to this domain")
		return jwtClaims{}, false
	}
	return c, true
}

type refreshGrant struct {
	clientID string
	expires  time.Time
}

// tokenResponse is the RFC 6749 section 5.1 answer.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	IDToken      string `json:"id_token,omitempty"`
}

// handleToken is the OAuth2 token endpoint: client_credentials and
// refresh_token grants, client authentication by client_secret_post or
// client_secret_basic. Errors follow RFC 6749 section 5.2 (JSON, not
// problem+json: that is what OAuth2 clients parse).
func (s *Sim) handleToken(w http.ResponseWriter, r *http.Request) {
	now := s.clock.Now()
	rec := TokenRequest{At: now}
	fail := func(status int, code, desc string) {
		rec.Error = code
		s.addTokenRequest(rec)
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="qubs"`)
		}
		w.Header().Set("Content-Type", contentTypeJSON)
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}

	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		fail(http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		fail(http.StatusBadRequest, "invalid_request", "the form cannot be parsed")
		return
	}
	// Only the body counts: RFC 6749 forbids credentials in the query.
	form := r.PostForm
	rec.GrantType = form.Get("grant_type")

	id, secret, basic := r.BasicAuth()
	if basic {
		// RFC 6749 section 2.3.1: id and secret are form-encoded before
		// Basic encoding; clients that skip it still work for plain values.
		if v, err := url.QueryUnescape(id); err == nil {
			id = v
		}
		if v, err := url.QueryUnescape(secret); err == nil {
			secret = v
		}
		rec.AuthMethod = "client_secret_basic"
		if form.Has("client_secret") || (form.Has("client_id") && form.Get("client_id") != id) {
			rec.ClientID = id
			fail(http.StatusBadRequest, "invalid_request", "use one client authentication method")
			return
		}
	} else {
		id, secret = form.Get("client_id"), form.Get("client_secret")
		if form.Has("client_secret") {
			rec.AuthMethod = "client_secret_post"
		}
	}
	rec.ClientID = id
	s.mu.Lock()
	cl := s.clients[id]
	s.mu.Unlock()
	if id == "" || cl == nil || rec.AuthMethod == "" ||
		subtle.ConstantTimeCompare([]byte(secret), []byte(cl.Secret)) != 1 {
		fail(http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}

	resp := tokenResponse{TokenType: "Bearer", ExpiresIn: int64(s.tokenTTL / time.Second)}
	switch rec.GrantType {
	case "client_credentials":
		// A refresh token is issued with every client-credentials grant,
		// as the documentation's lifetimes suggest ("when issued").
		resp.RefreshToken = hex.EncodeToString(randomBytes(32))
		s.mu.Lock()
		s.refresh[resp.RefreshToken] = refreshGrant{clientID: id, expires: now.Add(refreshTokenTTL)}
		s.mu.Unlock()
	case "refresh_token":
		rt := form.Get("refresh_token")
		s.mu.Lock()
		g, ok := s.refresh[rt]
		if ok && !now.Before(g.expires) {
			delete(s.refresh, rt)
			ok = false
		}
		s.mu.Unlock()
		if rt == "" {
			fail(http.StatusBadRequest, "invalid_request", "refresh_token is required")
			return
		}
		if !ok || g.clientID != id {
			fail(http.StatusBadRequest, "invalid_grant", "the refresh token is invalid or expired")
			return
		}
		// The refresh token is not rotated: it stays valid until its
		// 5-day expiry, so the answer carries no new one.
	case "":
		fail(http.StatusBadRequest, "invalid_request", "grant_type is required")
		return
	default:
		fail(http.StatusBadRequest, "unsupported_grant_type", "only client_credentials and refresh_token are supported")
		return
	}

	domains := s.clientDomains(cl)
	base := jwtClaims{
		Iss: s.baseURL(r), Sub: id, Aud: jwtAudience, ClientID: id, Domains: domains,
		Iat: now.Unix(), Exp: now.Add(s.tokenTTL).Unix(),
	}
	access := base
	access.TokenUse = "access"
	access.Jti = hex.EncodeToString(randomBytes(8))
	resp.AccessToken = s.signJWT(access)
	idt := base
	idt.TokenUse = "id"
	idt.Jti = hex.EncodeToString(randomBytes(8))
	resp.IDToken = s.signJWT(idt)

	rec.OK = true
	s.addTokenRequest(rec)
	w.Header().Set("Content-Type", contentTypeJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	_ = json.NewEncoder(w).Encode(resp)
}

// clientDomains returns the domains a client's new tokens cover.
func (s *Sim) clientDomains(cl *clientReg) []string {
	if cl.all {
		return s.Domains()
	}
	return append([]string(nil), cl.Domains...)
}

func (s *Sim) addTokenRequest(rec TokenRequest) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if len(s.tokenReqs) >= maxRecords {
		s.tokenReqs = append(s.tokenReqs[:0:0], s.tokenReqs[maxRecords/2:]...)
	}
	s.tokenReqs = append(s.tokenReqs, rec)
}

// baseURL is the absolute base of links the simulator hands out.
func (s *Sim) baseURL(r *http.Request) string {
	if s.publicURL != "" {
		return s.publicURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
