package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
)

// StaticEntry is one line of the static tokens file. The file holds only
// hashes: a leaked file (backup, config repository) does not leak tokens.
type StaticEntry struct {
	// Name identifies the token in audit logs (Principal.Subject and TokenID).
	Name string `json:"name"`
	// SHA256 is HashToken(token): 64 lower-case hex digits.
	SHA256 string `json:"sha256"`
	// Domains the token may reach; "*" is refused.
	Domains []string `json:"domains"`
	// Scopes is a space-separated SMART scope string.
	Scopes string `json:"scopes"`
}

type staticToken struct {
	hash      [sha256.Size]byte
	principal Principal
}

type staticAuth struct{ tokens []staticToken }

// HashToken returns the lower-case hex SHA-256 of token, the form the
// static tokens file stores. A plain hash without salt is enough because
// tokens are random (GenerateToken gives 256 bits): there is no dictionary
// to attack, unlike passwords.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// GenerateToken returns a new random static token: 32 bytes from
// crypto/rand, base64url without padding (a valid RFC 6750 b64token).
func GenerateToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("auth.GenerateToken: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

var (
	validSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// validName keeps names safe to log and to put in audit records.
	validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$`)
	// weakHashes are hashes of tokens nobody should use: the empty string
	// and the placeholders of our own documentation.
	weakHashes = map[string]string{
		HashToken(""):                 "the empty token",
		HashToken("changeme"):         "a placeholder token",
		HashToken("change-me"):        "a placeholder token",
		HashToken("secret"):           "a placeholder token",
		HashToken("token"):            "a placeholder token",
		HashToken("REPLACE_ME"):       "a placeholder token",
		HashToken("example-token"):    "a placeholder token",
		HashToken("my-secret-token"):  "a placeholder token",
		HashToken("test"):             "a placeholder token",
		HashToken("password"):         "a placeholder token",
		HashToken("0123456789abcdef"): "a placeholder token",
	}
)

// NewStatic loads the static tokens file: a JSON array of
//
//	{"name": "ris-acme", "sha256": "<HashToken(token)>", "domains": ["acme"], "scopes": "system/ServiceRequest.rs"}
//
// It refuses the whole file when an entry has an unknown field (a "token"
// field with a plain-text token above all), a hash that is not 64 hex
// digits or is the hash of the empty or a placeholder token, a duplicate
// name or hash, no domains, the wildcard domain "*", a malformed domain, or
// no resource scope. Refusing at start-up beats running with a token that
// grants nothing or too much.
func NewStatic(path string) (_ Authenticator, err error) {
	defer wrap(&err, "auth.NewStatic(%q)", path)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var entries []StaticEntry
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("want a JSON array of {name, sha256, domains, scopes} (plain-text tokens are refused): %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after the JSON array")
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("no tokens")
	}
	a := &staticAuth{}
	names := map[string]bool{}
	hashes := map[string]string{}
	for i, e := range entries {
		t, err := e.compile()
		if err != nil {
			return nil, fmt.Errorf("entry %d (%q): %w", i, clip(e.Name), err)
		}
		if names[e.Name] {
			return nil, fmt.Errorf("entry %d: duplicate name %q", i, e.Name)
		}
		names[e.Name] = true
		if other, ok := hashes[e.SHA256]; ok {
			return nil, fmt.Errorf("entry %d (%q): same token hash as %q; give every client its own token", i, e.Name, other)
		}
		hashes[e.SHA256] = e.Name
		a.tokens = append(a.tokens, t)
	}
	return a, nil
}

func (e StaticEntry) compile() (staticToken, error) {
	var t staticToken
	if !validName.MatchString(e.Name) {
		return t, fmt.Errorf("name: want 1-128 characters of A-Z a-z 0-9 . _ @ : -")
	}
	if !validSHA256.MatchString(e.SHA256) {
		return t, fmt.Errorf("sha256: want 64 lower-case hex digits, the output of auth.HashToken (never the token itself)")
	}
	if why, weak := weakHashes[e.SHA256]; weak {
		return t, fmt.Errorf("sha256 is the hash of %s", why)
	}
	if len(e.Domains) == 0 {
		return t, fmt.Errorf("domains: at least one domain required")
	}
	for _, d := range e.Domains {
		if d == "*" {
			return t, fmt.Errorf(`domains: "*" is refused; list the domains explicitly`)
		}
		if !validDomain.MatchString(d) {
			return t, fmt.Errorf("domains: malformed domain %q", clip(d))
		}
	}
	scopes, err := ParseScopes(e.Scopes)
	if err != nil {
		return t, fmt.Errorf("scopes: %w", err)
	}
	if len(scopes) == 0 {
		return t, fmt.Errorf("scopes: no resource scope (want for example system/ServiceRequest.rs)")
	}
	h, _ := hex.DecodeString(e.SHA256)
	copy(t.hash[:], h)
	t.principal = Principal{
		Subject: e.Name,
		Method:  "static",
		Domains: slices.Compact(slices.Sorted(slices.Values(e.Domains))),
		Scopes:  scopes,
		TokenID: e.Name,
	}
	return t, nil
}

// Authenticate implements Authenticator. Every entry is compared in
// constant time, so the response time says nothing about which hash came
// close.
func (a *staticAuth) Authenticate(r *http.Request) (*Principal, error) {
	tok, err := requestToken(r)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(tok))
	found := -1
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], a.tokens[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return nil, invalidToken("unknown token")
	}
	p := a.tokens[found].principal
	p.Domains = slices.Clone(p.Domains)
	p.Scopes = slices.Clone(p.Scopes)
	return &p, nil
}

// wrap adds the operation to an error, the project's defer-wrap habit.
func wrap(errp *error, format string, args ...any) {
	if *errp != nil {
		*errp = fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), *errp)
	}
}
