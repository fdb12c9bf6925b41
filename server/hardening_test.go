package server_test

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
)

func TestRateLimitPerClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		sc.RateLimit = server.RateLimit{Rate: 0.01, Burst: 3}
	})
	for i := range 3 {
		r := get(t, e.base+"/metadata")
		require.Equal(t, http.StatusOK, r.status, "request %d is within the burst", i)
	}
	r := get(t, e.base+"/metadata")
	assert.Equal(t, http.StatusTooManyRequests, r.status)
	secs, err := strconv.Atoi(r.header.Get("Retry-After"))
	require.NoError(t, err)
	assert.Greater(t, secs, 0)
	outcome(t, r)
	// Health checks are not FHIR traffic and stay unthrottled.
	assert.Equal(t, http.StatusOK, get(t, e.srv.URL+"/healthz").status)
}

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) { sc.MaxBodyBytes = 1 << 10 })
	big := bytes.Repeat([]byte(" "), 2<<10)
	r := post(t, e.base+"/DiagnosticReport", big, nil)
	assert.Equal(t, http.StatusRequestEntityTooLarge, r.status)
	outcome(t, r)

	// Without a Content-Length the limit applies while reading.
	req, err := http.NewRequest(http.MethodPost, e.base+"/DiagnosticReport", struct{ *bytes.Reader }{bytes.NewReader(big)})
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/fhir+json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)
}

func TestDefaultBodyLimitFitsTwentyArtifacts(t *testing.T) {
	t.Parallel()
	base64Of2MiB := (qubs.MaxUploadBytes + 2) / 3 * 4
	assert.GreaterOrEqual(t, server.DefaultMaxBodyBytes, 20*base64Of2MiB, "twenty 2 MiB artifacts in base64 must fit")
	assert.Less(t, server.DefaultMaxBodyBytes, 21*base64Of2MiB, "and not much more")
}

// TestUnreadableURLs: a path or query holding a NUL or bytes that are not
// UTF-8 once decoded is refused with a 400 OperationOutcome before any
// work, on every kind of route. On PostgreSQL, whose text refuses them,
// reads of reports and binaries and AuditEvent searches once answered
// 500.
func TestUnreadableURLs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withPostgres(t))
	for _, p := range []string{
		"/DiagnosticReport/%00", "/Binary/a%00b", "/ServiceRequest/%FF", "/AuditEvent?agent=%00",
		"/ServiceRequest?identifier=a%FFb", "/ServiceRequest?identifier=%C0%80", "/ServiceRequest?code=%00",
		"/ImagingStudy?identifier=%00", "/Task?owner=%00", "/DiagnosticReport?identifier=%00",
		"/Subscription?status=%00", "/ServiceRequest?%00=1", "/ServiceRequest?_count=10&_sort=%E2%82",
	} {
		r := get(t, e.base+p)
		assert.Equal(t, http.StatusBadRequest, r.status, "%s: %s", p, r.body)
		if r.status == http.StatusBadRequest {
			outcome(t, r)
		}
	}
	// Unicode, escaped or not, is fine.
	for _, p := range []string{"/ServiceRequest?identifier=caf%C3%A9", "/ServiceRequest?code=%E2%82%AC&_count=1"} {
		assert.Equal(t, http.StatusOK, get(t, e.base+p).status, p)
	}
	// The same parameters in a POST _search's form body.
	form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	for body, want := range map[string]int{
		"identifier=a%00b": http.StatusBadRequest, "identifier=a%FFb": http.StatusBadRequest,
		"code=%00": http.StatusBadRequest, "%00=1": http.StatusBadRequest, "%C0%80=1": http.StatusBadRequest,
		"identifier=caf%C3%A9": http.StatusOK, "_count=1&code=%E2%82%AC": http.StatusOK,
	} {
		r := do(t, http.MethodPost, e.base+"/ServiceRequest/_search", form, strings.NewReader(body))
		assert.Equal(t, want, r.status, "POST _search %s: %s", body, r.body)
		if r.status == http.StatusBadRequest {
			outcome(t, r)
		}
	}
}

// TestSearchValueBound: a search naming more values than
// fhir.MaxSearchValues answers 400 too-costly through the router on either
// store, where about 1,000 once made SQLite answer 500 and a few hundred
// identifiers kept PostgreSQL busy for minutes.
func TestSearchValueBound(t *testing.T) {
	t.Parallel()
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = "x" + strconv.Itoa(i)
	}
	for name, opt := range map[string]envOption{"sqlite": withStore(t), "postgres": withPostgres(t)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, opt)
			for _, p := range []string{
				"/ServiceRequest?identifier=" + strings.Join(ids, ","),
				"/ServiceRequest?_id=" + strings.Join(ids[:101], ","),
				"/ImagingStudy?identifier=" + strings.Join(ids, ","),
			} {
				r := get(t, e.base+p)
				assert.Equal(t, http.StatusBadRequest, r.status, "%.60s: %.300s", p, r.body)
				if r.status == http.StatusBadRequest {
					outcome(t, r)
				}
			}
			assert.Equal(t, http.StatusOK, get(t, e.base+"/ServiceRequest?identifier="+strings.Join(ids[:100], ",")).status)
		})
	}
}
