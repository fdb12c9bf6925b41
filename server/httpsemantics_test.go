package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
)

// raw sends a request and returns the answer with its body read, without
// the FHIR validity check of do (a HEAD answer has a FHIR content type and
// no body).
func raw(t *testing.T, method, u string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	return send(t, method, u, header, nil)
}

// binaryURL returns the Binary URL of a seeded referral of the first
// pending appointment that has one.
func binaryURL(t *testing.T, e *env) string {
	t.Helper()
	appt, _ := firstPending(t, e.sim, 32)
	e.sim.PutAttachment("acme", appt.AppointmentID, qubs.Attachment{Category: "Referral", FileName: "head-test.pdf"}, pdf("referral"))
	r := get(t, e.base+"/DocumentReference?related=ServiceRequest/"+appt.AppointmentID)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	for _, m := range entries(r.json(t), "match") {
		att := resourceOf(m)["content"].([]any)[0].(map[string]any)["attachment"].(map[string]any)
		if att["title"] == "head-test.pdf" {
			return att["url"].(string)
		}
	}
	t.Fatal("no Binary URL in the DocumentReferences")
	return ""
}

func TestHeadOnEveryGetRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	_, srID := firstPending(t, e.sim, 0)
	sr := get(t, e.base+"/ServiceRequest/"+srID).json(t)
	patient := sr["subject"].(map[string]any)["reference"].(string)
	for _, path := range []string{
		e.base + "/metadata",
		e.base + "/ServiceRequest?_count=3",
		e.base + "/ServiceRequest/" + srID,
		e.base + "/" + patient,
		e.base + "/DiagnosticReport?based-on=ServiceRequest/" + srID,
		e.base + "/ServiceRequest/does-not-exist",
		binaryURL(t, e),
	} {
		t.Run(path[len(e.base):], func(t *testing.T) {
			getRes, getBody := raw(t, http.MethodGet, path, nil)
			headRes, headBody := raw(t, http.MethodHead, path, nil)
			assert.Equal(t, getRes.StatusCode, headRes.StatusCode)
			assert.Empty(t, headBody, "HEAD carries no body")
			assert.NotEmpty(t, getBody)
			for _, h := range []string{"Content-Type", "ETag", "Last-Modified", "Cache-Control", "X-Content-Type-Options", "Content-Disposition"} {
				assert.Equal(t, getRes.Header.Get(h), headRes.Header.Get(h), h)
			}
		})
	}
	r := do(t, http.MethodPost, e.base+"/metadata", nil, nil)
	assert.Equal(t, "GET, HEAD", r.header.Get("Allow"))
}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t), withStaticTokens(t, []auth.StaticEntry{
		{Name: "ris", SHA256: auth.HashToken("good-token"), Domains: []string{"acme"}, Scopes: "system/*.rs"},
	}))
	_, srID := firstPending(t, e.sim, 0)
	ok := bearer("good-token")
	cases := []struct {
		name   string
		url    string
		header http.Header
		status int
	}{
		{"FHIR JSON", e.base + "/ServiceRequest/" + srID, ok, http.StatusOK},
		{"search", e.base + "/ServiceRequest?_count=2", ok, http.StatusOK},
		{"not found", e.base + "/ServiceRequest/nope", ok, http.StatusNotFound},
		{"no route", e.base + "/Nothing", ok, http.StatusNotFound},
		{"no token", e.base + "/ServiceRequest", nil, http.StatusUnauthorized},
		{"bad token", e.base + "/ServiceRequest", bearer("wrong"), http.StatusUnauthorized},
		{"metadata", e.base + "/metadata", nil, http.StatusOK},
		{"health", strings.TrimSuffix(e.base, "/fhir/acme") + "/healthz", nil, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := raw(t, http.MethodGet, tc.url, tc.header)
			require.Equal(t, tc.status, res.StatusCode)
			assertSecurityHeaders(t, res.Header)
		})
	}
}

func TestSecurityHeadersOnBinary(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	res, body := raw(t, http.MethodGet, binaryURL(t, e), nil)
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, pdf("referral"), body)
	assertSecurityHeaders(t, res.Header)
	assert.Contains(t, res.Header.Get("Content-Security-Policy"), "sandbox")
}

func assertSecurityHeaders(t *testing.T, h http.Header) {
	t.Helper()
	assert.Equal(t, "nosniff", h.Get("X-Content-Type-Options"))
	assert.Equal(t, "no-store", h.Get("Cache-Control"))
	assert.Contains(t, h.Get("Content-Security-Policy"), "frame-ancestors 'none'")
	assert.Equal(t, "DENY", h.Get("X-Frame-Options"))
}

func TestForwardedHeadersOnlyFromTrustedProxies(t *testing.T) {
	t.Parallel()
	forged := http.Header{"X-Forwarded-Host": {"evil.example"}, "X-Forwarded-Proto": {"https"}}
	t.Run("untrusted peer: links use the request's own host", func(t *testing.T) {
		e := newEnv(t)
		r := do(t, http.MethodGet, e.base+"/ServiceRequest?_count=2", forged, nil)
		require.Equal(t, http.StatusOK, r.status)
		b := r.json(t)
		assert.True(t, strings.HasPrefix(link(b, "next"), e.base+"/"), link(b, "next"))
		assert.True(t, strings.HasPrefix(link(b, "self"), e.base+"/"), link(b, "self"))
		for _, m := range entries(b, "match") {
			assert.True(t, strings.HasPrefix(m["fullUrl"].(string), e.base+"/"), m["fullUrl"])
		}
	})
	t.Run("trusted proxy: its headers are believed", func(t *testing.T) {
		e := newEnv(t, func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
			sc.TrustedProxies = []string{"127.0.0.0/8"}
		})
		r := do(t, http.MethodGet, e.base+"/ServiceRequest?_count=2", forged, nil)
		require.Equal(t, http.StatusOK, r.status)
		assert.True(t, strings.HasPrefix(link(r.json(t), "next"), "https://evil.example/fhir/acme/"), link(r.json(t), "next"))
	})
	t.Run("BRIDGE_PUBLIC_URL wins over everything", func(t *testing.T) {
		e := newEnv(t, func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
			sc.TrustedProxies = []string{"127.0.0.1"}
			sc.PublicURL = "https://bridge.example.org"
		})
		r := do(t, http.MethodGet, e.base+"/ServiceRequest?_count=2", forged, nil)
		require.Equal(t, http.StatusOK, r.status)
		assert.True(t, strings.HasPrefix(link(r.json(t), "next"), "https://bridge.example.org/fhir/acme/"))
	})
}

// TestConditionalReads: every read carries an ETag, and If-None-Match with
// it answers 304 without a body; a changed view gets a new ETag.
func TestConditionalReads(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	appt, srID := firstPending(t, e.sim, 3)
	r := get(t, e.base+"/ServiceRequest/"+srID)
	require.Equal(t, http.StatusOK, r.status)
	patient := r.json(t)["subject"].(map[string]any)["reference"].(string)
	created := do(t, http.MethodPost, e.base+"/DiagnosticReport", http.Header{"Content-Type": {"application/fhir+json"}},
		strings.NewReader(string(report{srID: srID, status: "preliminary", text: "Prelim " + phiMarker}.json())))
	require.Equal(t, http.StatusCreated, created.status, "%s", created.body)
	drID := created.json(t)["id"].(string)

	for _, path := range []string{"/ServiceRequest/" + srID, "/" + patient, "/DiagnosticReport/" + drID, "/DiagnosticReport/" + drID + "/_history/1"} {
		t.Run(path, func(t *testing.T) {
			first, _ := raw(t, http.MethodGet, e.base+path, nil)
			require.Equal(t, http.StatusOK, first.StatusCode)
			tag := first.Header.Get("ETag")
			require.NotEmpty(t, tag)
			again, body := raw(t, http.MethodGet, e.base+path, http.Header{"If-None-Match": {`"other", ` + tag}})
			assert.Equal(t, http.StatusNotModified, again.StatusCode)
			assert.Empty(t, body)
			assert.Equal(t, tag, again.Header.Get("ETag"))
			stale, _ := raw(t, http.MethodGet, e.base+path, http.Header{"If-None-Match": {`W/"stale"`}})
			assert.Equal(t, http.StatusOK, stale.StatusCode)
		})
	}
	t.Run("a changed study gets a new ETag", func(t *testing.T) {
		before, _ := raw(t, http.MethodGet, e.base+"/ServiceRequest/"+srID, nil)
		changed := appt
		changed.ClinicalInfo = "Now with more detail"
		e.sim.PutAppointment(changed)
		after, _ := raw(t, http.MethodGet, e.base+"/ServiceRequest/"+srID, http.Header{"If-None-Match": {before.Header.Get("ETag")}})
		assert.Equal(t, http.StatusOK, after.StatusCode)
		assert.NotEqual(t, before.Header.Get("ETag"), after.Header.Get("ETag"))
	})
}
