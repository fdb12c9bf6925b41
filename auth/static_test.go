package auth_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestHashToken(t *testing.T) {
	// sha256("abc"), FIPS 180-2 appendix B.1.
	assert.Equal(t, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", auth.HashToken("abc"))
	tok, err := auth.GenerateToken()
	require.NoError(t, err)
	_, err = auth.BearerToken("Bearer " + tok)
	require.NoError(t, err, "generated tokens are valid b64tokens")
	assert.GreaterOrEqual(t, len(tok), 43)
}

func TestNewStaticRefuses(t *testing.T) {
	good := auth.HashToken("a-good-random-token-0123456789")
	other := auth.HashToken("another-random-token-9876543210")
	cases := []struct{ name, file, want string }{
		{"plain-text token field", `[{"name":"a","token":"s3cret-token-value","domains":["acme"],"scopes":"system/*.read"}]`, "unknown field"},
		{"hash not hex", `[{"name":"a","sha256":"s3cret-token-value","domains":["acme"],"scopes":"system/*.read"}]`, "64 lower-case hex"},
		{"upper-case hash", `[{"name":"a","sha256":"` + strings.ToUpper(good) + `","domains":["acme"],"scopes":"system/*.read"}]`, "64 lower-case hex"},
		{"hash of empty token", `[{"name":"a","sha256":"` + auth.HashToken("") + `","domains":["acme"],"scopes":"system/*.read"}]`, "empty token"},
		{"hash of placeholder", `[{"name":"a","sha256":"` + auth.HashToken("changeme") + `","domains":["acme"],"scopes":"system/*.read"}]`, "placeholder"},
		{"duplicate name", `[{"name":"a","sha256":"` + good + `","domains":["acme"],"scopes":"system/*.read"},{"name":"a","sha256":"` + other + `","domains":["acme"],"scopes":"system/*.read"}]`, "duplicate name"},
		{"duplicate hash", `[{"name":"a","sha256":"` + good + `","domains":["acme"],"scopes":"system/*.read"},{"name":"b","sha256":"` + good + `","domains":["acme"],"scopes":"system/*.read"}]`, "same token hash"},
		{"no domains", `[{"name":"a","sha256":"` + good + `","domains":[],"scopes":"system/*.read"}]`, "at least one domain"},
		{"wildcard domain", `[{"name":"a","sha256":"` + good + `","domains":["*"],"scopes":"system/*.read"}]`, `"*" is refused`},
		{"malformed domain", `[{"name":"a","sha256":"` + good + `","domains":["ac me"],"scopes":"system/*.read"}]`, "malformed domain"},
		{"no scopes", `[{"name":"a","sha256":"` + good + `","domains":["acme"],"scopes":"openid"}]`, "no resource scope"},
		{"malformed scope", `[{"name":"a","sha256":"` + good + `","domains":["acme"],"scopes":"system/Flag.sr"}]`, "scopes"},
		{"bad name", `[{"name":"a b","sha256":"` + good + `","domains":["acme"],"scopes":"system/*.read"}]`, "name"},
		{"empty array", `[]`, "no tokens"},
		{"object not array", `{"name":"a"}`, "JSON array"},
		{"trailing data", `[{"name":"a","sha256":"` + good + `","domains":["acme"],"scopes":"system/*.read"}] []`, "trailing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := auth.NewStatic(writeFile(t, "tokens.json", c.file))
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			assert.NotContains(t, err.Error(), "s3cret-token-value", "errors never echo a plain-text token")
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := auth.NewStatic(filepath.Join(t.TempDir(), "nope.json"))
		require.Error(t, err)
	})
}

func TestStatic(t *testing.T) {
	risTok, err := auth.GenerateToken()
	require.NoError(t, err)
	pacsTok, err := auth.GenerateToken()
	require.NoError(t, err)
	file := `[
  {"name": "ris-acme", "sha256": "` + auth.HashToken(risTok) + `", "domains": ["acme", "beta"], "scopes": "system/ServiceRequest.rs system/DiagnosticReport.cu"},
  {"name": "pacs", "sha256": "` + auth.HashToken(pacsTok) + `", "domains": ["acme"], "scopes": "system/*.read"}
]`
	a, err := auth.NewStatic(writeFile(t, "tokens.json", file))
	require.NoError(t, err)

	cases := append(malformedHeaders(risTok),
		access{name: "valid", header: []string{"Bearer " + risTok}, status: 200},
		access{name: "second domain", header: []string{"Bearer " + risTok}, domain: "beta", status: 200},
		access{name: "create report", header: []string{"Bearer " + risTok}, resource: "DiagnosticReport", perm: 'c', status: 200},
		access{name: "v1 read scope", header: []string{"Bearer " + pacsTok}, resource: "Binary", status: 200},
		access{name: "unknown token", header: []string{"Bearer " + risTok + "x"}, status: 401, code: "invalid_token"},
		access{name: "the hash is not the token", header: []string{"Bearer " + auth.HashToken(risTok)}, status: 401, code: "invalid_token"},
		access{name: "a JWT is not a static token", header: []string{"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."}, status: 401, code: "invalid_token"},
		access{name: "missing scope", header: []string{"Bearer " + risTok}, resource: "DiagnosticReport", perm: 'd', status: 403, code: "insufficient_scope"},
		access{name: "write with read scope", header: []string{"Bearer " + pacsTok}, resource: "DiagnosticReport", perm: 'c', status: 403, code: "insufficient_scope"},
		access{name: "another domain", header: []string{"Bearer " + pacsTok}, domain: "beta", status: 403, code: "insufficient_scope"},
	)
	runAccess(t, a, cases)

	t.Run("principal", func(t *testing.T) {
		p, err := authorize(a, access{header: []string{"Bearer " + risTok}, domain: "acme", resource: "ServiceRequest", perm: 'r'})
		require.NoError(t, err)
		assert.Equal(t, "ris-acme", p.Subject)
		assert.Equal(t, "static", p.Method)
		assert.Equal(t, "ris-acme", p.TokenID, "audit sees the token's name, never the token")
		assert.Equal(t, []string{"acme", "beta"}, p.Domains)
		assert.Equal(t, "system/ServiceRequest.rs system/DiagnosticReport.cu", auth.FormatScopes(p.Scopes))
		p.Domains[0] = "mutated"
		p2, err := authorize(a, access{header: []string{"Bearer " + risTok}, domain: "acme", resource: "ServiceRequest", perm: 'r'})
		require.NoError(t, err, "a caller mutating its Principal does not change the next one")
		assert.Equal(t, "acme", p2.Domains[0])
	})
}
