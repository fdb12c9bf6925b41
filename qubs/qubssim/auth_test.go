package qubssim_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

type tokenResp struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
	Error        string `json:"error"`
}

func basic(id, secret string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))}}
}

func TestTokenEndpoint(t *testing.T) {
	srv := start(t, qubssim.Options{
		Appointments: 10,
		Clients:      []qubssim.Client{{ID: "p&q client", Secret: "s3cr=t/+", Domains: []string{"acme"}}},
	})
	id, secret := "p&q client", "s3cr=t/+"
	tests := []struct {
		name       string
		form       url.Values
		hdr        http.Header
		status     int
		err        string
		authMethod string
	}{
		{"client_secret_post", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}, nil, 200, "", "client_secret_post"},
		{"client_secret_basic", url.Values{"grant_type": {"client_credentials"}}, basic(id, secret), 200, "", "client_secret_basic"},
		{"basic with matching client_id in body", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}}, basic(id, secret), 200, "", "client_secret_basic"},
		{"both methods", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}, basic(id, secret), 400, "invalid_request", "client_secret_basic"},
		{"wrong secret post", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {"nope"}}, nil, 401, "invalid_client", "client_secret_post"},
		{"wrong secret basic", url.Values{"grant_type": {"client_credentials"}}, basic(id, "nope"), 401, "invalid_client", "client_secret_basic"},
		{"unknown client", url.Values{"grant_type": {"client_credentials"}, "client_id": {"who"}, "client_secret": {secret}}, nil, 401, "invalid_client", "client_secret_post"},
		{"default client not registered", url.Values{"grant_type": {"client_credentials"}, "client_id": {qubssim.DefaultClientID}, "client_secret": {qubssim.DefaultClientSecret}}, nil, 401, "invalid_client", "client_secret_post"},
		{"no secret", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}}, nil, 401, "invalid_client", ""},
		{"unsupported grant", url.Values{"grant_type": {"password"}, "client_id": {id}, "client_secret": {secret}}, nil, 400, "unsupported_grant_type", "client_secret_post"},
		{"missing grant", url.Values{"client_id": {id}, "client_secret": {secret}}, nil, 400, "invalid_request", "client_secret_post"},
		{"refresh without token", url.Values{"grant_type": {"refresh_token"}, "client_id": {id}, "client_secret": {secret}}, nil, 400, "invalid_request", "client_secret_post"},
		{"refresh with junk", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"junk"}, "client_id": {id}, "client_secret": {secret}}, nil, 400, "invalid_grant", "client_secret_post"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(srv.TokenRequests())
			resp, body := postForm(t, srv.TokenURL(), tc.form, tc.hdr)
			require.Equal(t, tc.status, resp.StatusCode, string(body))
			assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
			assert.NotEmpty(t, resp.Header.Get("X-Correlation-Id"))
			var tr tokenResp
			require.NoError(t, json.Unmarshal(body, &tr))
			assert.Equal(t, tc.err, tr.Error)
			if tc.status == 200 {
				assert.Equal(t, "Bearer", tr.TokenType)
				assert.Equal(t, 3600, tr.ExpiresIn)
				assert.NotEmpty(t, tr.RefreshToken)
				assert.NotEmpty(t, tr.IDToken)
				assert.Len(t, strings.Split(tr.AccessToken, "."), 3)
			}
			if tc.status == 401 {
				assert.Contains(t, resp.Header.Get("WWW-Authenticate"), "Basic")
			}
			reqs := srv.TokenRequests()
			require.Len(t, reqs, before+1)
			last := reqs[len(reqs)-1]
			assert.Equal(t, tc.status == 200, last.OK)
			assert.Equal(t, tc.authMethod, last.AuthMethod)
			assert.Equal(t, tc.form.Get("grant_type"), last.GrantType)
			assert.Equal(t, tc.err, last.Error)
		})
	}

	t.Run("wrong content type", func(t *testing.T) {
		resp, body := call{method: http.MethodPost, path: "/oauth2/token", body: `{"grant_type":"client_credentials"}`}.do(t, srv)
		require.Equal(t, 400, resp.StatusCode)
		assert.Contains(t, string(body), "invalid_request")
	})
	t.Run("GET is 405", func(t *testing.T) {
		resp, body := get(t, srv, "", "/oauth2/token")
		requireProblem(t, resp, body, 405)
		assert.Equal(t, "POST", resp.Header.Get("Allow"))
	})
}

// jwtClaims decodes a token's claims without verifying it.
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	require.Len(t, parts, 3)
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func TestTokenClaimsAndScopes(t *testing.T) {
	clk := qubssim.NewFakeClock(t0)
	srv := start(t, qubssim.Options{
		Appointments: 20, Clock: clk, TokenTTL: 10 * time.Minute,
		Clients: []qubssim.Client{
			{ID: "acme-only", Secret: "a", Domains: []string{"acme"}},
			{ID: "ghostly", Secret: "g", Domains: []string{"acme", "ghost"}},
		},
	})
	acme := tokenFor(t, srv, "acme-only", "a")
	c := jwtClaims(t, acme)
	assert.Equal(t, "acme-only", c["sub"])
	assert.Equal(t, "access", c["token_use"])
	assert.Equal(t, []any{"acme"}, c["domains"])
	assert.EqualValues(t, t0.Unix(), c["iat"])
	assert.EqualValues(t, t0.Add(10*time.Minute).Unix(), c["exp"])

	ok := apiPath("acme", "/A123456")
	tests := []struct {
		name   string
		auth   string
		path   string
		status int
		errHdr bool // WWW-Authenticate carries error="invalid_token"
	}{
		{"valid", "Bearer " + acme, ok, 200, false},
		{"scheme case-insensitive", "bearer " + acme, ok, 200, false},
		{"no header", "", ok, 401, false},
		{"basic scheme", "Basic Zm9vOmJhcg==", ok, 401, false},
		{"not a jwt", "Bearer abc", ok, 401, true},
		{"tampered signature", "Bearer " + acme[:len(acme)-4] + "AAAA", ok, 401, true},
		{"tampered claims", "Bearer " + tamperDomains(t, acme), ok, 401, true},
		{"domain outside token", "Bearer " + acme, apiPath("northside", "/pending"), 403, false},
		{"unknown domain in token", "Bearer " + tokenFor(t, srv, "ghostly", "g"), apiPath("ghost", "/pending"), 404, false},
		{"unknown domain in token, appointment", "Bearer " + tokenFor(t, srv, "ghostly", "g"), apiPath("ghost", "/A1"), 404, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.auth != "" {
				hdr["Authorization"] = tc.auth
			}
			resp, body := call{method: http.MethodGet, path: tc.path, hdr: hdr}.do(t, srv)
			if tc.status == 200 {
				require.Equal(t, 200, resp.StatusCode, string(body))
				return
			}
			requireProblem(t, resp, body, tc.status)
			if tc.status == 401 {
				assert.Contains(t, resp.Header.Get("WWW-Authenticate"), "Bearer")
				assert.Equal(t, tc.errHdr, strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`))
			}
		})
	}

	t.Run("id token is not an access token", func(t *testing.T) {
		resp, body := postForm(t, srv.TokenURL(), url.Values{"grant_type": {"client_credentials"}, "client_id": {"acme-only"}, "client_secret": {"a"}}, nil)
		var tr tokenResp
		requireJSON(t, resp, body, 200, &tr)
		assert.Equal(t, "id", jwtClaims(t, tr.IDToken)["token_use"])
		resp, body = get(t, srv, tr.IDToken, ok)
		requireProblem(t, resp, body, 401)
	})

	t.Run("expiry follows the clock", func(t *testing.T) {
		tok := tokenFor(t, srv, "acme-only", "a")
		clk.Advance(10*time.Minute - time.Second)
		resp, body := get(t, srv, tok, ok)
		require.Equal(t, 200, resp.StatusCode, string(body))
		clk.Advance(time.Second)
		resp, body = get(t, srv, tok, ok)
		p := requireProblem(t, resp, body, 401)
		assert.Contains(t, p.Detail, "expired")
	})
}

// tamperDomains rewrites the claims to add a domain, keeping the signature.
func tamperDomains(t *testing.T, tok string) string {
	parts := strings.Split(tok, ".")
	c := jwtClaims(t, tok)
	c["domains"] = []string{"acme", "northside"}
	b, _ := json.Marshal(c)
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
}

func TestRefreshToken(t *testing.T) {
	clk := qubssim.NewFakeClock(t0)
	srv := start(t, qubssim.Options{Appointments: 10, Clock: clk, Clients: []qubssim.Client{
		{ID: "one", Secret: "1", Domains: []string{"acme"}}, {ID: "two", Secret: "2", Domains: []string{"acme"}},
	}})
	resp, body := postForm(t, srv.TokenURL(), url.Values{"grant_type": {"client_credentials"}, "client_id": {"one"}, "client_secret": {"1"}}, nil)
	var first tokenResp
	requireJSON(t, resp, body, 200, &first)

	refresh := func(id, secret string) (int, tokenResp) {
		resp, body := postForm(t, srv.TokenURL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {first.RefreshToken}}, basic(id, secret))
		var tr tokenResp
		require.NoError(t, json.Unmarshal(body, &tr))
		return resp.StatusCode, tr
	}

	status, tr := refresh("two", "2")
	assert.Equal(t, 400, status, "another client's refresh token")
	assert.Equal(t, "invalid_grant", tr.Error)

	clk.Advance(2 * time.Hour) // the first access token has expired
	status, tr = refresh("one", "1")
	require.Equal(t, 200, status)
	assert.Empty(t, tr.RefreshToken, "refresh tokens are not rotated")
	assert.EqualValues(t, t0.Add(3*time.Hour).Unix(), jwtClaims(t, tr.AccessToken)["exp"])
	resp, body = get(t, srv, tr.AccessToken, apiPath("acme", "/A123456"))
	require.Equal(t, 200, resp.StatusCode, string(body))

	clk.Advance(5*24*time.Hour - 2*time.Hour - time.Second)
	status, _ = refresh("one", "1")
	assert.Equal(t, 200, status, "still within 5 days")
	clk.Advance(time.Second)
	status, tr = refresh("one", "1")
	assert.Equal(t, 400, status, "5 days after issue")
	assert.Equal(t, "invalid_grant", tr.Error)
}

func TestDefaultClientCoversNewDomains(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 10})
	a, _ := srv.Appointment("acme", "A123456")
	a.Domain, a.AppointmentID = "brandnew", "X1"
	srv.PutAppointment(a)
	tok := token(t, srv)
	assert.Contains(t, jwtClaims(t, tok)["domains"], "brandnew")
	resp, body := get(t, srv, tok, apiPath("brandnew", "/X1"))
	require.Equal(t, 200, resp.StatusCode, string(body))
}
