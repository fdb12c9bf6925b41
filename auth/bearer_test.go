package auth_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
)

func TestBearerToken(t *testing.T) {
	long := strings.Repeat("a", 16<<10+1)
	cases := []struct {
		name, header, want string
		status             int
		code               string
	}{
		{name: "plain", header: "Bearer abc.def-ghi_~+/", want: "abc.def-ghi_~+/"},
		{name: "padding", header: "Bearer abc==", want: "abc=="},
		{name: "mixed-case scheme", header: "bEaReR x", want: "x"},
		{name: "empty", header: "", status: 401},
		{name: "other scheme", header: "Basic abc", status: 401},
		{name: "scheme prefix only", header: "Bearerabc", status: 401},
		{name: "Bearer alone", header: "Bearer", status: 400, code: "invalid_request"},
		{name: "two spaces", header: "Bearer  abc", status: 400, code: "invalid_request"},
		{name: "only padding", header: "Bearer ==", status: 400, code: "invalid_request"},
		{name: "padding then text", header: "Bearer a=b", status: 400, code: "invalid_request"},
		{name: "comma", header: "Bearer a,b", status: 400, code: "invalid_request"},
		{name: "quote", header: `Bearer "abc"`, status: 400, code: "invalid_request"},
		{name: "non-ASCII", header: "Bearer abcé", status: 400, code: "invalid_request"},
		{name: "NUL", header: "Bearer ab\x00c", status: 400, code: "invalid_request"},
		{name: "too long", header: "Bearer " + long, status: 400, code: "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := auth.BearerToken(c.header)
			if c.status == 0 {
				require.NoError(t, err)
				assert.Equal(t, c.want, got)
				return
			}
			var ae *auth.Error
			require.True(t, errors.As(err, &ae), "want *auth.Error, got %v", err)
			assert.Equal(t, c.status, ae.Status)
			assert.Equal(t, c.code, ae.Code)
			assert.Empty(t, got)
		})
	}
}

func TestErrorWWWAuthenticate(t *testing.T) {
	cases := []struct {
		name string
		err  auth.Error
		want string
	}{
		{"no credentials", auth.Error{Status: 401, Description: "bearer token required"}, `Bearer realm="qubs-fhir-bridge"`},
		{"invalid token", auth.Error{Status: 401, Code: "invalid_token", Description: "token expired"},
			`Bearer realm="qubs-fhir-bridge", error="invalid_token", error_description="token expired"`},
		{"scope", auth.Error{Status: 403, Code: "insufficient_scope", Description: "d", Scope: "system/Flag.r"},
			`Bearer realm="qubs-fhir-bridge", error="insufficient_scope", error_description="d", scope="system/Flag.r"`},
		{"quotes and controls stripped", auth.Error{Status: 401, Code: "invalid_token", Description: "a\"b\\c\r\nd"},
			`Bearer realm="qubs-fhir-bridge", error="invalid_token", error_description="abcd"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, c.err.WWWAuthenticate())
		})
	}
}

var b64token = regexp.MustCompile(`^[A-Za-z0-9\-._~+/]+=*$`)

func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer a.b.c", "Bearer", "Bearer  x", "Basic x", "Bearer a=", "Bearer =", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, err := auth.BearerToken(h)
		if err != nil {
			var ae *auth.Error
			if !errors.As(err, &ae) || (ae.Status != 400 && ae.Status != 401) {
				t.Fatalf("BearerToken(%q): error %v is not a 400/401 *auth.Error", h, err)
			}
			if tok != "" {
				t.Fatalf("BearerToken(%q): token %q with an error", h, tok)
			}
			if strings.Contains(ae.Description, h) && len(h) > 8 {
				t.Fatalf("BearerToken(%q): description echoes the header", h)
			}
			return
		}
		if !b64token.MatchString(tok) || len(h) != len("Bearer ")+len(tok) || !strings.EqualFold(h[:7], "Bearer ") || h[7:] != tok {
			t.Fatalf("BearerToken(%q) = %q: accepted a header that is not Bearer SP b64token", h, tok)
		}
	})
}
