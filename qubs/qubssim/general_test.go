package qubssim_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

func TestCorrelationID(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 20})
	tok := token(t, srv)
	atts := func() string {
		_, body := get(t, srv, tok, apiPath("acme", "/A123456/attachments"))
		var a []qubs.Attachment
		require.NoError(t, json.Unmarshal(body, &a))
		return *a[0].URL
	}()
	reqs := []struct {
		name   string
		method string
		url    string
		body   string
		status int
	}{
		{"success", "GET", srv.URL + apiPath("acme", "/A123456"), "", 200},
		{"problem", "GET", srv.URL + apiPath("acme", "/NOPE"), "", 404},
		{"unknown route", "GET", srv.URL + "/nowhere", "", 404},
		{"token endpoint", "POST", srv.TokenURL(), "", 400},
		{"presigned", "GET", atts, "", 200},
	}
	for _, tc := range reqs {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, tc.url, strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("X-Correlation-Id", "4b7f0a91b4f54f2a")
			resp, _ := send(t, http.DefaultClient, req)
			assert.Equal(t, tc.status, resp.StatusCode)
			assert.Equal(t, "4b7f0a91b4f54f2a", resp.Header.Get("X-Correlation-Id"))

			req.Header.Del("X-Correlation-Id")
			resp, _ = send(t, http.DefaultClient, req)
			gen := resp.Header.Get("X-Correlation-Id")
			assert.Regexp(t, `^[0-9a-f]{16}$`, gen)
			resp, _ = send(t, http.DefaultClient, req)
			assert.NotEqual(t, gen, resp.Header.Get("X-Correlation-Id"))
		})
	}

	t.Run("recorded with the report", func(t *testing.T) {
		post(t, srv, tok, apiPath("acme", "/A123456/report"), `{"reportText":"x","reportStatus":"final"}`, map[string]string{"X-Correlation-Id": "corr-1"})
		recs := srv.Reports("acme", "A123456")
		require.Len(t, recs, 1)
		assert.Equal(t, "corr-1", recs[0].CorrelationID)
		assert.Equal(t, "corr-1", lastRequest(srv.Sim).CorrelationID)
	})
}

func TestRequestIDsAreUnique(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 10})
	seen := map[string]bool{}
	for range 50 {
		resp, body := get(t, srv, "", apiPath("acme", "/A123456"))
		p := requireProblem(t, resp, body, 401)
		assert.False(t, seen[p.RequestID], p.RequestID)
		seen[p.RequestID] = true
	}
	recs := srv.Requests()
	assert.NotEqual(t, recs[0].RequestID, recs[1].RequestID)
}

func TestRouting(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 10})
	tok := token(t, srv)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/", 404, ""},
		{"GET", "/integrations/v1/acme/reporting/appointments", 404, ""},
		{"GET", "/integrations/v2/acme/reporting/appointments/pending", 404, ""},
		{"GET", apiPath("acme", "/A123456/report"), 405, "POST"},
		{"DELETE", apiPath("acme", "/A123456"), 405, "GET"},
		{"PUT", apiPath("acme", "/A123456/comments"), 405, "GET, POST"},
		{"POST", apiPath("acme", "/pending"), 405, "GET"},
		{"GET", "/presigned/upload/x", 405, "PUT"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp, body := call{method: tc.method, path: tc.path, tok: tok}.do(t, srv)
			p := requireProblem(t, resp, body, tc.status)
			assert.Equal(t, tc.path, p.Instance)
			assert.Equal(t, tc.allow, resp.Header.Get("Allow"))
			assert.Equal(t, "", lastRequest(srv.Sim).Route)
		})
	}
}

// TestHandlerWithoutServer: the Sim is a plain http.Handler (httptest).
func TestHandlerWithoutServer(t *testing.T) {
	hs := httptest.NewServer(qubssim.New(qubssim.Options{Appointments: 10}))
	defer hs.Close()
	resp, err := http.PostForm(hs.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"},
		"client_id": {qubssim.DefaultClientID}, "client_secret": {qubssim.DefaultClientSecret}})
	require.NoError(t, err)
	var tr tokenResp
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tr))
	resp.Body.Close()
	req, _ := http.NewRequest("GET", hs.URL+apiPath("acme", "/A123456/attachments"), nil)
	req.Header.Set("Authorization", "Bearer "+tr.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var atts []qubs.Attachment
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&atts))
	require.Len(t, atts, 1)
	assert.True(t, strings.HasPrefix(*atts[0].URL, hs.URL+"/presigned/download/"), "derived from the request")
}

// TestLogsHoldNoPHI drives every kind of request and checks the log holds
// no names, report or comment text, dates of birth, or tokens.
func TestLogsHoldNoPHI(t *testing.T) {
	var buf syncBuffer
	srv := start(t, qubssim.Options{Appointments: 30, Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	tok := token(t, srv)
	get(t, srv, tok, apiPath("acme", "/pending?pageSize=50"))
	get(t, srv, tok, apiPath("acme", "/A123456"))
	get(t, srv, tok, apiPath("acme", "/A123456/comments"))
	post(t, srv, tok, apiPath("acme", "/A123456/report"), `{"reportText":"SECRET-REPORT-TEXT","reportStatus":"final"}`, nil)
	post(t, srv, tok, apiPath("acme", "/A123456/comments"), `{"commentText":"SECRET-COMMENT"}`, nil)
	post(t, srv, tok, apiPath("acme", "/A123456/comments"), `{"commentText":"SECRET-BAD","commentType":"??"}`, nil)
	u := newUpload(t, srv, tok, `{"fileName":"Jane-Doe.pdf"}`)
	put(t, u.UploadURL, "", strings.NewReader("SECRET-BYTES"), 12)
	get(t, srv, "", apiPath("acme", "/A123456"))

	log := buf.String()
	require.Contains(t, log, "qubssim request")
	for _, secret := range []string{"Jane", "Doe", "1988-03-03", "SECRET", tok[:20], qubssim.DefaultClientSecret, "Bearer"} {
		assert.NotContains(t, log, secret)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestConcurrency hammers every operation at once; run with -race.
func TestConcurrency(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 300})
	tok := token(t, srv)
	ids := srv.PendingIDs("acme")[:40]
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers*200)
	expect := func(want ...int) func(*http.Response, error) {
		return func(resp *http.Response, err error) {
			if err != nil {
				errs <- err
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if len(want) == 0 {
				want = []int{http.StatusOK}
			}
			for _, w := range want {
				if resp.StatusCode == w {
					return
				}
			}
			errs <- fmt.Errorf("%s %s: status %d, want %v", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, want)
		}
	}
	do := func(method, path, body string, hdr ...string) (*http.Response, error) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		return http.DefaultClient.Do(req)
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				id := ids[(w*7+i)%len(ids)]
				switch i % 7 {
				case 0:
					expect()(do("GET", apiPath("acme", "/pending?pageSize=50"), ""))
				case 1:
					expect(200, 404)(do("GET", apiPath("acme", "/"+id), ""))
				case 2:
					expect(201, 404, 409)(do("POST", apiPath("acme", "/"+id+"/comments"), `{"commentText":"hi"}`, "Idempotency-Key", fmt.Sprintf("c-%d", i%3)))
				case 3:
					expect(201, 404)(do("POST", apiPath("acme", "/"+id+"/report"), `{"reportText":"r","reportStatus":"final"}`))
				case 4:
					resp, err := do("POST", apiPath("acme", "/"+id+"/report/attachments"), `{"items":[{"fileName":"a.pdf"}]}`)
					if err == nil && resp.StatusCode == 201 {
						var u qubs.UploadURLs
						_ = json.NewDecoder(resp.Body).Decode(&u)
						resp.Body.Close()
						req, _ := http.NewRequest("PUT", u.Items[0].UploadURL, strings.NewReader("pdf"))
						expect()(http.DefaultClient.Do(req))
						continue
					}
					expect(201, 404)(resp, err)
				case 5:
					st := qubs.StatusPendingReporting
					if i%2 == 0 {
						st = qubs.StatusTyped
					}
					srv.SetStatus("acme", id, st)
					_ = srv.Requests()
					_ = srv.Reports("acme", id)
				case 6:
					expect(200, 404)(do("GET", apiPath("acme", "/"+id+"/attachments"), ""))
					expect()(do("GET", "/_sim/inspect", ""))
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total := 0
	for _, id := range ids {
		for _, r := range srv.Reports("acme", id) {
			total++
			assert.Equal(t, srv.Reports("acme", id)[0].ReportGUID, r.ReportGUID)
		}
	}
	assert.Positive(t, total)
}
