package qubssim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// freshClient opens a new connection per request: Go's transport silently
// retries a request that fails on a reused connection when it is a GET or
// carries an Idempotency-Key, which would hide a dropped connection.
var freshClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func lastRequest(s *qubssim.Sim) qubssim.RequestRecord {
	r := s.Requests()
	return r[len(r)-1]
}

// recordOf waits for the record of the request with the correlation id:
// after a dropped connection the client may learn of the drop before the
// simulator has written its record.
func recordOf(t *testing.T, s *qubssim.Sim, corr string) qubssim.RequestRecord {
	t.Helper()
	var rec qubssim.RequestRecord
	eventually(t, func() bool {
		for _, r := range s.Requests() {
			if r.CorrelationID == corr {
				rec = r
				return true
			}
		}
		return false
	}, "the record of request "+corr)
	return rec
}

func TestFaultStatus(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 20})
	tok := token(t, srv)
	pending := apiPath("acme", "/pending?pageSize=1")

	srv.AddFault(qubssim.Fault{Route: "/pending", Count: 2, Status: 429, RetryAfter: "7"})
	for range 2 {
		resp, body := get(t, srv, tok, pending)
		requireProblem(t, resp, body, 429)
		assert.Equal(t, "7", resp.Header.Get("Retry-After"))
		assert.True(t, lastRequest(srv.Sim).Fault)
		assert.Equal(t, 429, lastRequest(srv.Sim).Status)
	}
	resp, body := get(t, srv, tok, pending)
	requireJSON(t, resp, body, 200, nil)
	assert.False(t, lastRequest(srv.Sim).Fault)
	assert.Empty(t, srv.Faults(), "used up")

	t.Run("method filter and no effect", func(t *testing.T) {
		srv.AddFault(qubssim.Fault{Method: "POST", Count: 1, Status: 503, RetryAfter: "Wed, 21 Oct 2026 07:28:00 GMT"})
		resp, body := get(t, srv, tok, apiPath("acme", "/A123456"))
		requireJSON(t, resp, body, 200, nil)
		resp, body = post(t, srv, tok, apiPath("acme", "/A123456/report"), `{"reportText":"x","reportStatus":"final"}`, nil)
		requireProblem(t, resp, body, 503)
		assert.Equal(t, "Wed, 21 Oct 2026 07:28:00 GMT", resp.Header.Get("Retry-After"))
		assert.Empty(t, srv.Reports("acme", "A123456"))
	})

	t.Run("unlimited until cleared", func(t *testing.T) {
		srv.AddFault(qubssim.Fault{Route: "/oauth2/token", Status: 500})
		for range 3 {
			resp, _ := postForm(t, srv.TokenURL(), nil, nil)
			assert.Equal(t, 500, resp.StatusCode)
		}
		require.Len(t, srv.Faults(), 1)
		assert.Zero(t, srv.Faults()[0].Count)
		srv.ClearFaults()
		token(t, srv)
	})
}

func TestFaultDrop(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 20})
	tok := token(t, srv)
	srv.AddFault(qubssim.Fault{Method: "GET", Route: "/A123456", Count: 1, Drop: true})
	req, _ := http.NewRequest(http.MethodGet, srv.URL+apiPath("acme", "/A123456"), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Correlation-Id", "dropped")
	_, err := freshClient.Do(req)
	require.Error(t, err)
	rec := recordOf(t, srv.Sim, "dropped")
	assert.True(t, rec.Fault)
	assert.Zero(t, rec.Status)

	req.Header.Set("X-Correlation-Id", "second")
	resp, body := send(t, freshClient, req)
	requireJSON(t, resp, body, 200, nil)
}

// TestFaultAfterHandling: the response is lost but the effect is
// committed; a retry with the same Idempotency-Key gets the original answer.
func TestFaultAfterHandling(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 20})
	tok := token(t, srv)

	t.Run("status", func(t *testing.T) {
		key := map[string]string{"Idempotency-Key": "lost-report"}
		body := `{"reportText":"x","reportStatus":"final"}`
		srv.AddFault(qubssim.Fault{Route: "/report", Count: 1, Status: 502, AfterHandling: true})
		resp, b := post(t, srv, tok, apiPath("acme", "/A123456/report"), body, key)
		requireProblem(t, resp, b, 502)
		rec := lastRequest(srv.Sim)
		assert.True(t, rec.Fault)
		assert.Equal(t, 502, rec.Status)
		assert.Equal(t, 201, rec.HandledStatus)
		require.Len(t, srv.Reports("acme", "A123456"), 1, "committed")

		resp, b = post(t, srv, tok, apiPath("acme", "/A123456/report"), body, key)
		requireJSON(t, resp, b, 201, nil)
		assert.True(t, lastRequest(srv.Sim).Replayed)
		assert.Len(t, srv.Reports("acme", "A123456"), 1, "not duplicated")
	})

	t.Run("drop", func(t *testing.T) {
		srv.AddFault(qubssim.Fault{Method: "POST", Route: "/comments", Count: 1, Drop: true, AfterHandling: true})
		req, _ := http.NewRequest(http.MethodPost, srv.URL+apiPath("acme", "/A123457/comments"), strings.NewReader(`{"commentText":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Idempotency-Key", "lost-comment")
		req.Header.Set("X-Correlation-Id", "lost-comment-1")
		_, err := freshClient.Do(req)
		require.Error(t, err)
		require.Len(t, srv.CreatedComments("acme", "A123457"), 1)
		rec := recordOf(t, srv.Sim, "lost-comment-1")
		assert.Equal(t, 201, rec.HandledStatus)
		assert.Zero(t, rec.Status)

		req, _ = http.NewRequest(http.MethodPost, srv.URL+apiPath("acme", "/A123457/comments"), strings.NewReader(`{"commentText":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Idempotency-Key", "lost-comment")
		resp, body := send(t, freshClient, req)
		requireJSON(t, resp, body, 201, nil)
		assert.Len(t, srv.CreatedComments("acme", "A123457"), 1)
	})

	t.Run("upload put", func(t *testing.T) {
		u := newUpload(t, srv, tok, `{"fileName":"r.pdf"}`)
		srv.AddFault(qubssim.Fault{Method: "PUT", Route: "/presigned/", Count: 1, Status: 503, AfterHandling: true})
		resp, _ := put(t, u.UploadURL, "", bytes.NewReader([]byte("x")), 1)
		assert.Equal(t, 503, resp.StatusCode)
		ups := srv.Uploads("acme", "A123460")
		assert.True(t, ups[len(ups)-1].Uploaded)
		resp, body := put(t, u.UploadURL, "", bytes.NewReader([]byte("x")), 1)
		requireS3Error(t, resp, body, 409, "UploadAlreadyCompleted")
	})
}

func TestFaultLatency(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 20})
	tok := token(t, srv)

	t.Run("client gives up, nothing happens", func(t *testing.T) {
		srv.AddFault(qubssim.Fault{Route: "/report", Count: 1, Latency: time.Hour})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+apiPath("acme", "/A123456/report"), strings.NewReader(`{"reportText":"x","reportStatus":"final"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		_, err := http.DefaultClient.Do(req)
		require.Error(t, err)
		assert.True(t, errors.Is(err, context.DeadlineExceeded), err)
		eventually(t, func() bool {
			r := lastRequest(srv.Sim)
			return r.Fault && r.Route == "POST "+apiBaseRoute+"/{appointmentId}/report"
		}, "the abandoned request to be recorded")
		assert.Zero(t, lastRequest(srv.Sim).Status)
		assert.Empty(t, srv.Reports("acme", "A123456"))
	})

	t.Run("delayed then served", func(t *testing.T) {
		srv.AddFault(qubssim.Fault{Route: "/A123456", Count: 1, Latency: 20 * time.Millisecond})
		resp, body := get(t, srv, tok, apiPath("acme", "/A123456"))
		requireJSON(t, resp, body, 200, nil)
		assert.True(t, lastRequest(srv.Sim).Fault)
	})
}

func TestAdminEndpoints(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 20})
	tok := token(t, srv)
	nreq := len(srv.Requests())

	resp, body := post(t, srv, "", "/_sim/faults", `{"route":"/pending","status":429,"retryAfter":"3","count":1,"latency":"1ms"}`, nil)
	requireJSON(t, resp, body, 201, nil)
	resp, body = get(t, srv, "", "/_sim/faults")
	var fs []map[string]any
	requireJSON(t, resp, body, 200, &fs)
	require.Len(t, fs, 1)
	assert.Equal(t, "1ms", fs[0]["latency"])
	resp, body = get(t, srv, tok, apiPath("acme", "/pending"))
	requireProblem(t, resp, body, 429)
	assert.Equal(t, "3", resp.Header.Get("Retry-After"))

	for _, bad := range []string{`{"latency":"soon"}`, `{"status":200}`, `{"count":-1}`, `{"unknown":1}`, `not json`} {
		resp, body := post(t, srv, "", "/_sim/faults", bad, nil)
		requireProblem(t, resp, body, 400)
	}
	post(t, srv, "", "/_sim/faults", `{"status":500}`, nil)
	resp, _ = call{method: http.MethodDelete, path: "/_sim/faults"}.do(t, srv)
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	assert.Empty(t, srv.Faults())

	post(t, srv, tok, apiPath("acme", "/A123456/report"), `{"reportText":"x","reportStatus":"final"}`, map[string]string{"Idempotency-Key": "k1"})
	post(t, srv, tok, apiPath("acme", "/A123456/comments"), `{"commentText":"x"}`, nil)
	newUpload(t, srv, tok, `{"fileName":"r.pdf"}`)
	resp, body = get(t, srv, "", "/_sim/inspect")
	var v struct {
		Domains map[string]struct {
			Reports  map[string][]json.RawMessage `json:"reports"`
			Comments map[string][]json.RawMessage `json:"comments"`
			Uploads  map[string][]map[string]any  `json:"uploads"`
		} `json:"domains"`
		TokenRequests []json.RawMessage `json:"tokenRequests"`
		Requests      int               `json:"requests"`
	}
	requireJSON(t, resp, body, 200, &v)
	assert.Len(t, v.Domains["acme"].Reports["A123456"], 1)
	assert.Len(t, v.Domains["acme"].Comments["A123456"], 1)
	assert.Len(t, v.Domains["acme"].Uploads["A123460"], 1)
	assert.Contains(t, string(body), `"IdempotencyKey":"k1"`)
	assert.Len(t, v.TokenRequests, 1)
	assert.Equal(t, nreq+4, v.Requests, "admin requests are not recorded")

	resp, body = get(t, srv, "", "/_sim/nothing")
	requireProblem(t, resp, body, 404)
}

// TestFaultRate: a fault with a rate applies to about that share of the
// matching requests and spares the others.
func TestFaultRate(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 20})
	tok := token(t, srv)
	srv.AddFault(qubssim.Fault{Route: "/pending", Status: 503, Rate: 0.2})
	faulted := 0
	const n = 400
	for range n {
		resp, _ := get(t, srv, tok, apiPath("acme", "/pending?pageSize=1"))
		if resp.StatusCode == 503 {
			faulted++
		}
	}
	// 400 draws at p = 0.2: mean 80, standard deviation 8; 40..120 is
	// five deviations either side.
	assert.InDelta(t, 80, faulted, 40)
	assert.Equal(t, 0.2, srv.Faults()[0].Rate)
}
