package authtest_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth/authtest"
)

func header(t *testing.T, tok string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	require.NoError(t, err)
	var h map[string]any
	require.NoError(t, json.Unmarshal(raw, &h))
	return h
}

func TestForgeries(t *testing.T) {
	claims := map[string]any{"sub": "x"}
	t.Run("unsigned", func(t *testing.T) {
		tok := authtest.Unsigned(claims, "k")
		assert.True(t, strings.HasSuffix(tok, "."), "empty signature")
		assert.Equal(t, "none", header(t, tok)["alg"])
	})
	t.Run("hmac", func(t *testing.T) {
		tok := authtest.HMAC([]byte("key"), "HS256", "k", claims)
		parts := strings.Split(tok, ".")
		m := hmac.New(sha256.New, []byte("key"))
		m.Write([]byte(parts[0] + "." + parts[1]))
		assert.Equal(t, base64.RawURLEncoding.EncodeToString(m.Sum(nil)), parts[2])
	})
	t.Run("tamper keeps the signature", func(t *testing.T) {
		tok := authtest.HMAC([]byte("key"), "HS256", "k", claims)
		tampered := authtest.Tamper(tok, "sub", "y")
		assert.Equal(t, strings.Split(tok, ".")[2], strings.Split(tampered, ".")[2])
		assert.NotEqual(t, strings.Split(tok, ".")[1], strings.Split(tampered, ".")[1])
	})
}

func TestIssuer(t *testing.T) {
	iss := authtest.NewIssuer(t)
	fetch := func() jose.JSONWebKeySet {
		resp, err := http.Get(iss.JWKSURL())
		require.NoError(t, err)
		defer resp.Body.Close()
		var set jose.JSONWebKeySet
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&set))
		return set
	}
	set := fetch()
	require.Len(t, set.Keys, 3)
	assert.Equal(t, 1, iss.Fetches())

	for _, alg := range []string{"RS256", "RS384", "PS256", "ES256", "ES384"} {
		t.Run(alg, func(t *testing.T) {
			tok := iss.Sign(map[string]any{"sub": "x"}, alg)
			obj, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
			require.NoError(t, err)
			keys := set.Key(obj.Signatures[0].Header.KeyID)
			require.Len(t, keys, 1)
			_, err = obj.Verify(keys[0].Key)
			require.NoError(t, err)
		})
	}

	iss.Rotate()
	assert.Len(t, fetch().Keys, 6, "rotation keeps the old keys published")
	iss.Fail(true)
	resp, err := http.Get(iss.JWKSURL())
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	assert.Equal(t, 3, iss.Fetches())
}

func TestClientJWKS(t *testing.T) {
	for _, mk := range []func(string) (*authtest.Client, []byte){authtest.NewClient, authtest.NewRSAClient} {
		c, jwks := mk("c")
		var set jose.JSONWebKeySet
		require.NoError(t, json.Unmarshal(jwks, &set))
		require.Len(t, set.Keys, 1)
		assert.True(t, set.Keys[0].IsPublic(), "the JWKS to register holds no private key")
		assert.Equal(t, c.KeyID(), set.Keys[0].KeyID)
		tok := c.Assertion("https://b/token", "j", time.Now().Add(time.Minute))
		obj, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES384, jose.RS384})
		require.NoError(t, err)
		_, err = obj.Verify(set.Keys[0].Key)
		require.NoError(t, err)
	}
}
