package server_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// TestReportArtifactsAsBinaries: an artifact sent inline is stored once
// and served as a Binary; the report keeps a url, size and hash to it,
// so reads and the 201 echo are small, and the bytes reach QUBS intact.
func TestReportArtifactsAsBinaries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		store func(testing.TB) envOption
	}{{"sqlite", withStore}, {"postgres", withPostgres}} {
		t.Run(tc.name, func(t *testing.T) {
			var st store.Store
			e := newEnv(t, tc.store(t), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
				st = sc.Store
				sc.TrustedProxies = []string{"127.0.0.1"} // the test client plays the proxy
			})
			reportArtifactsAsBinaries(t, e, st)
		})
	}
}

func reportArtifactsAsBinaries(t *testing.T, e *env, st store.Store) {
	appt, srID := firstPending(t, e.sim, 16)
	file := append(pdf("artifact "+phiMarker), bytes.Repeat([]byte("0123456789"), 100_000)...) // 1 MB: many reads
	body := report{srID: srID, status: "preliminary", text: "Preliminary " + phiMarker, pdfs: [][]byte{file}}.json()
	// JSON may escape the slashes of base64; the bridge decodes them.
	body = bytes.ReplaceAll(body, []byte("/"), []byte(`\/`))
	require.Contains(t, string(body), `\/`)

	r := post(t, e.base+"/DiagnosticReport", body, http.Header{"Idempotency-Key": {"art-1"}})
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	assert.Less(t, len(r.body), 8<<10, "the echo names the artifact, it does not carry it")
	dr := r.json(t)
	id := dr["id"].(string)
	forms := dr["presentedForm"].([]any)
	require.Len(t, forms, 2)
	text := forms[0].(map[string]any)
	assert.Equal(t, base64.StdEncoding.EncodeToString([]byte("Preliminary "+phiMarker)), text["data"], "report text stays inline, as sent")
	art := forms[1].(map[string]any)
	assert.NotContains(t, art, "data")
	sum := sha1.Sum(file)
	assert.Equal(t, base64.StdEncoding.EncodeToString(sum[:]), art["hash"])
	assert.EqualValues(t, len(file), art["size"])
	assert.Equal(t, "application/pdf", art["contentType"])
	assert.Equal(t, "report-0.pdf", art["title"])
	binURL, _ := art["url"].(string)
	require.True(t, strings.HasPrefix(binURL, e.base+"/Binary/dra-"), "%s", binURL)

	// The Binary: the bytes, in their own media type, with length and tag.
	res, err := http.Get(binURL)
	require.NoError(t, err)
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, "application/pdf", res.Header.Get("Content-Type"))
	assert.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"))
	assert.EqualValues(t, len(file), res.ContentLength)
	assert.Equal(t, `"`+sha(file)+`"`, res.Header.Get("ETag"))
	assert.True(t, bytes.Equal(file, got), "the bytes as sent")
	req, _ := http.NewRequest(http.MethodGet, binURL, nil)
	req.Header.Set("If-None-Match", res.Header.Get("ETag"))
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusNotModified, res.StatusCode)
	req.Header.Del("If-None-Match")
	req.Header.Set("Accept", "application/fhir+json")
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	var bin map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&bin))
	res.Body.Close()
	assert.Equal(t, "Binary", bin["resourceType"])
	assert.Equal(t, base64.StdEncoding.EncodeToString(file), bin["data"])

	// Reads serve the small resource too; a retry is the same report.
	r = get(t, e.base+"/DiagnosticReport/"+id)
	require.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, binURL, r.json(t)["presentedForm"].([]any)[1].(map[string]any)["url"])
	again := post(t, e.base+"/DiagnosticReport", body, http.Header{"Idempotency-Key": {"art-1"}})
	assert.Equal(t, http.StatusCreated, again.status, "%s", again.body)
	assert.Equal(t, id, again.json(t)["id"])
	// The url is stored relative: served on the base of the request, and a
	// retry that reached the bridge under another name is the same report.
	viaProxy := post(t, e.base+"/DiagnosticReport", body, http.Header{"Idempotency-Key": {"art-1"}, "X-Forwarded-Host": {"bridge.example.org"}})
	require.Equal(t, http.StatusCreated, viaProxy.status, "%s", viaProxy.body)
	assert.Equal(t, id, viaProxy.json(t)["id"])
	otherURL := viaProxy.json(t)["presentedForm"].([]any)[1].(map[string]any)["url"]
	assert.Equal(t, "http://bridge.example.org/fhir/acme/Binary/"+binURL[strings.LastIndex(binURL, "/")+1:], otherURL)

	// QUBS gets the bytes.
	eventually(t, "delivery", func() bool { return len(e.sim.Reports("acme", appt.AppointmentID)) == 1 })
	ups := e.sim.Uploads("acme", appt.AppointmentID)
	require.Len(t, ups, 1)
	assert.Equal(t, sha(file), ups[0].SHA256)

	// The audit knows whose file the Binary read disclosed.
	binRef := "Binary/" + binURL[strings.LastIndex(binURL, "/")+1:]
	eventually(t, "the Binary read audited", func() bool {
		recs, _, err := st.SearchAudit(context.Background(), "acme", store.AuditFilter{Limit: 50})
		require.NoError(t, err)
		return slices.ContainsFunc(recs, func(rec *store.AuditRecord) bool {
			return slices.Contains(rec.EntityRefs, binRef) && slices.Contains(rec.PatientRefs, "Patient/"+appt.PatientID)
		})
	})

	// The report as read, made final and sent back: the url to its own
	// artifact is accepted and delivered again as the same bytes.
	r = get(t, e.base+"/DiagnosticReport/"+id)
	dr = r.json(t)
	dr["status"] = "final"
	delete(dr, "meta")
	b, _ := json.Marshal(dr)
	r = put(t, e.base+"/DiagnosticReport/"+id, b, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.Equal(t, binURL, r.json(t)["presentedForm"].([]any)[1].(map[string]any)["url"])
	eventually(t, "the final delivered", func() bool { return len(e.sim.Reports("acme", appt.AppointmentID)) == 2 })
	ups = e.sim.Uploads("acme", appt.AppointmentID)
	require.Len(t, ups, 2)
	assert.Equal(t, sha(file), ups[1].SHA256)
	res, err = http.Get(binURL)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)

	// Another patient's report cannot take this artifact by url.
	other, otherSR := firstPending(t, e.sim, 17)
	if other.PatientID != appt.PatientID {
		rep := report{srID: otherSR, status: "final", text: "x", extra: []map[string]any{{"contentType": "application/pdf", "url": binURL}}}
		r = post(t, e.base+"/DiagnosticReport", rep.json(), nil)
		assert.Equal(t, http.StatusUnprocessableEntity, r.status, "%s", r.body)
		outcome(t, r)
	}
	r = get(t, e.base+"/Binary/dra-0000")
	assert.Equal(t, http.StatusNotFound, r.status)
}

// TestBinaryCreateStreamed: a Binary is decoded as it is read, escapes
// and all; a refused one gets the same answers as before.
func TestBinaryCreateStreamed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	file := pdf("binary " + phiMarker)
	body := `{"resourceType":"Binary","contentType":"application/pdf","data":"` + strings.ReplaceAll(base64.StdEncoding.EncodeToString(file), "/", `\/`) + `"}`
	r := post(t, e.base+"/Binary", []byte(body), nil)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	res, err := http.Get(r.header.Get("Location"))
	require.NoError(t, err)
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, file, got)
	assert.EqualValues(t, len(file), res.ContentLength)

	huge := base64.StdEncoding.EncodeToString(make([]byte, qubs.MaxUploadBytes+3))
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"no data", `{"resourceType":"Binary","contentType":"application/pdf"}`, http.StatusUnprocessableEntity},
		{"too big", `{"resourceType":"Binary","contentType":"application/pdf","data":"` + huge + `"}`, http.StatusRequestEntityTooLarge},
		{"not base64, large", `{"resourceType":"Binary","contentType":"application/pdf","data":"` + huge[:100_000] + `*` + huge[:3] + `"}`, http.StatusBadRequest},
		{"duplicate data", `{"resourceType":"Binary","contentType":"application/pdf","data":"QQ==","data":"QQ=="}`, http.StatusBadRequest},
		{"truncated", `{"resourceType":"Binary","contentType":"application/pdf","data":"QQ==`, http.StatusBadRequest},
		{"empty", ``, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, e.base+"/Binary", []byte(tc.body), nil)
			assert.Equal(t, tc.status, r.status, "%s", r.body)
			outcome(t, r)
		})
	}
}
