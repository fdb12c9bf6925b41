package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestParseErrorsEchoNoRequestBytes: a refused body is described by where
// and what, never by what it held there: values a client sends can be PHI,
// and answers end up in proxies' and clients' logs.
func TestParseErrorsEchoNoRequestBytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	_, srID := firstPending(t, e.sim, 0)
	const secret = "Jane Citizen 1970-01-01 secret"
	based := `"basedOn":[{"reference":"ServiceRequest/` + srID + `"}]`
	cases := []struct {
		name, typ, body, want string
	}{
		{"truncated", "DiagnosticReport", `{"resourceType":"DiagnosticReport","conclusion":"` + secret + `",`, "line 1"},
		{"stray text", "DiagnosticReport", "{\n  \"resourceType\": \"DiagnosticReport\",\n  \"conclusion\": " + secret + "\n}", "line 3"},
		{"bad code", "DiagnosticReport", `{"resourceType":"DiagnosticReport","status":"` + secret + `","code":{"text":"x"},` + based + `}`, "status"},
		{"bad dateTime", "DiagnosticReport", `{"resourceType":"DiagnosticReport","status":"final","issued":"` + secret + `","code":{"text":"x"},` + based + `}`, "issued"},
		{"bad resourceType", "DiagnosticReport", `{"resourceType":"` + secret + `"}`, "resourceType"},
		{"unknown field", "DiagnosticReport", `{"resourceType":"DiagnosticReport","x":"` + secret + `"}`, "x"},
		{"comment truncated", "Communication", `{"resourceType":"Communication","payload":[{"contentString":"` + secret, "JSON"},
		{"comment stray text", "Communication", `{"resourceType":"Communication", ` + secret + `}`, "line 1"},
		{"binary truncated", "Binary", `{"resourceType":"Binary","contentType":"application/pdf","data":"` + secret, "JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodPost, e.base+"/"+tc.typ, http.Header{"Content-Type": {"application/fhir+json"}}, strings.NewReader(tc.body))
			require.GreaterOrEqual(t, r.status, 400, "%s", r.body)
			require.Less(t, r.status, 500, "%s", r.body)
			for _, part := range strings.Fields(secret) {
				assert.NotContains(t, string(r.body), part, "the answer repeats what the client sent")
			}
			assert.Contains(t, outcome(t, r), tc.want)
		})
	}
}
