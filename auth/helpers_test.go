package auth_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
)

// phiMarker stands for patient data placed in tokens' claims; no error
// description may ever contain it.
const phiMarker = "Jane Doe 1988-03-03"

// clock is a settable clock for time-dependent checks without sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// access is one request to a protected resource and what must come of it.
type access struct {
	name     string
	header   []string // Authorization header values; nil: none
	domain   string   // default "acme"
	resource string   // default "ServiceRequest"
	perm     byte     // default 'r'
	status   int      // 200 when access is granted
	code     string   // RFC 6750 error code expected
}

// authorize runs the whole check the server will run: Authenticate, then
// CheckDomain, then Check.
func authorize(a auth.Authenticator, c access) (*auth.Principal, error) {
	r := httptest.NewRequest(http.MethodGet, "/fhir/"+c.domain+"/"+c.resource, nil)
	for _, h := range c.header {
		r.Header.Add("Authorization", h)
	}
	p, err := a.Authenticate(r)
	if err != nil {
		return nil, err
	}
	if err := p.CheckDomain(c.domain); err != nil {
		return p, err
	}
	return p, p.Check(c.resource, c.perm)
}

var printable = regexp.MustCompile(`^[ -~]{1,200}$`)

// runAccess checks each case's status and code, and that the description
// holds neither a credential nor patient data.
func runAccess(t *testing.T, a auth.Authenticator, cases []access) {
	t.Helper()
	for _, c := range cases {
		if c.domain == "" {
			c.domain = "acme"
		}
		if c.resource == "" {
			c.resource = "ServiceRequest"
		}
		if c.perm == 0 {
			c.perm = 'r'
		}
		t.Run(c.name, func(t *testing.T) {
			p, err := authorize(a, c)
			if c.status == http.StatusOK {
				require.NoError(t, err)
				require.NotNil(t, p)
				return
			}
			require.Error(t, err)
			var ae *auth.Error
			require.True(t, errors.As(err, &ae), "want *auth.Error, got %T", err)
			assert.Equal(t, c.status, ae.Status, "status (%v)", ae)
			assert.Equal(t, c.code, ae.Code, "code (%v)", ae)
			assertSafe(t, ae, c.header...)
		})
	}
}

// assertSafe checks that an error's description and challenge are short
// printable text with no secret and no PHI in them.
func assertSafe(t *testing.T, ae *auth.Error, secrets ...string) {
	t.Helper()
	assert.Regexp(t, printable, ae.Description)
	for _, s := range append(secrets, phiMarker, "Jane") {
		tok := s
		if _, after, ok := strings.Cut(s, " "); ok {
			tok = after
		}
		if len(tok) >= 8 {
			assert.NotContains(t, ae.Description, tok)
			assert.NotContains(t, ae.WWWAuthenticate(), tok)
			assert.NotContains(t, ae.Error(), tok)
		}
	}
	h := ae.WWWAuthenticate()
	assert.True(t, strings.HasPrefix(h, `Bearer realm="qubs-fhir-bridge"`), h)
	if ae.Code != "" {
		assert.Contains(t, h, `error="`+ae.Code+`"`)
	}
}

// malformedHeaders are the header cases every mode shares; tok is a valid
// token for the mode.
func malformedHeaders(tok string) []access {
	return []access{
		{name: "no token", status: 401, code: ""},
		{name: "empty header", header: []string{""}, status: 401, code: ""},
		{name: "Bearer alone", header: []string{"Bearer"}, status: 400, code: "invalid_request"},
		{name: "Bearer and space", header: []string{"Bearer "}, status: 400, code: "invalid_request"},
		{name: "two spaces", header: []string{"Bearer  " + tok}, status: 400, code: "invalid_request"},
		{name: "trailing space", header: []string{"Bearer " + tok + " "}, status: 400, code: "invalid_request"},
		{name: "tab separator", header: []string{"Bearer\t" + tok}, status: 401, code: ""},
		{name: "Basic scheme", header: []string{"Basic dXNlcjpwYXNz"}, status: 401, code: ""},
		{name: "bad characters", header: []string{"Bearer " + tok[:len(tok)/2] + "$%" + tok[len(tok)/2:]}, status: 400, code: "invalid_request"},
		{name: "padding inside", header: []string{"Bearer ab=cd"}, status: 400, code: "invalid_request"},
		{name: "two Authorization headers", header: []string{"Bearer " + tok, "Bearer " + tok}, status: 400, code: "invalid_request"},
		{name: "lower-case scheme accepted", header: []string{"bearer " + tok}, status: 200},
		{name: "upper-case scheme accepted", header: []string{"BEARER " + tok}, status: 200},
	}
}
