package qubssim_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// effects counts what the simulator created on an appointment.
func effects(s *qubssim.Sim, appt string) int {
	return len(s.Reports("acme", appt)) + len(s.CreatedComments("acme", appt)) + len(s.Uploads("acme", appt))
}

func TestIdempotency(t *testing.T) {
	ops := []struct {
		name    string
		path    string
		body    string
		same    string // the same payload, spelled differently
		other   string
		keepFor time.Duration
	}{
		{"report", "/report",
			`{"reportText":"No acute abnormality.","reportStatus":"final","reportedAtUtc":"2025-01-10T03:04:05Z"}`,
			"{ \"reportStatus\" : \"final\",\n \"reportedAtUtc\":\"2025-01-10T03:04:05Z\", \"reportText\":\"No acute abnormality.\" }",
			`{"reportText":"No acute abnormality.","reportStatus":"preliminary","reportedAtUtc":"2025-01-10T03:04:05Z"}`,
			24 * time.Hour},
		{"comment", "/comments",
			`{"commentText":"Report sent to referrer.","commentType":"AC","isAlert":false}`,
			`{"isAlert":false,"commentType":"AC","commentText":"Report sent to referrer."}`,
			`{"commentText":"Report sent to referrer!","commentType":"AC","isAlert":false}`,
			24 * time.Hour},
		{"upload urls", "/report/attachments",
			`{"items":[{"fileName":"report.pdf","contentType":"application/pdf"}]}`,
			`{"items":[{"contentType":"application/pdf","fileName":"report.pdf"}]}`,
			`{"items":[{"fileName":"report2.pdf","contentType":"application/pdf"}]}`,
			15 * time.Minute},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			clk := qubssim.NewFakeClock(t0)
			srv := start(t, qubssim.Options{Appointments: 20, Clock: clk, TokenTTL: 48 * time.Hour, Clients: []qubssim.Client{
				{ID: "one", Secret: "1", Domains: []string{"acme"}}, {ID: "two", Secret: "2", Domains: []string{"acme"}},
			}})
			tok := tokenFor(t, srv, "one", "1")
			path := apiPath("acme", "/A123456"+op.path)
			key := map[string]string{"Idempotency-Key": "cd4a859c7a1f4b44b765a8fe17bb44c1", "X-Correlation-Id": "first"}

			resp, first := post(t, srv, tok, path, op.body, key)
			requireJSON(t, resp, first, 201, nil)
			assert.Empty(t, resp.Header.Get("Idempotent-Replayed"))
			n := effects(srv.Sim, "A123456")

			t.Run("same payload replays", func(t *testing.T) {
				clk.Advance(op.keepFor - time.Second)
				for _, body := range []string{op.body, op.same} {
					key["X-Correlation-Id"] = "retry"
					resp, again := post(t, srv, tok, path, body, key)
					requireJSON(t, resp, again, 201, nil)
					assert.Equal(t, string(first), string(again))
					assert.Equal(t, "true", resp.Header.Get("Idempotent-Replayed"))
					assert.Equal(t, "retry", resp.Header.Get("X-Correlation-Id"))
				}
				assert.Equal(t, n, effects(srv.Sim, "A123456"), "no new effect")
				reqs := srv.Requests()
				last := reqs[len(reqs)-1]
				assert.True(t, last.Replayed)
				assert.Equal(t, "cd4a859c7a1f4b44b765a8fe17bb44c1", last.IdempotencyKey)
				assert.Equal(t, "POST "+apiBaseRoute+"/{appointmentId}"+op.path, last.Route)
			})
			t.Run("different payload conflicts", func(t *testing.T) {
				resp, body := post(t, srv, tok, path, op.other, key)
				requireProblem(t, resp, body, 409)
				assert.Equal(t, n, effects(srv.Sim, "A123456"))
			})
			t.Run("same key on another appointment conflicts", func(t *testing.T) {
				resp, body := post(t, srv, tok, apiPath("acme", "/A123457"+op.path), op.body, key)
				requireProblem(t, resp, body, 409)
			})
			t.Run("keys are scoped per client", func(t *testing.T) {
				resp, body := post(t, srv, tokenFor(t, srv, "two", "2"), path, op.other, key)
				requireJSON(t, resp, body, 201, nil)
				n = effects(srv.Sim, "A123456")
			})
			t.Run("invalid requests are not remembered", func(t *testing.T) {
				k := map[string]string{"Idempotency-Key": "fix-and-retry"}
				resp, body := post(t, srv, tok, path, `{"reportText":""}`, k)
				requireProblem(t, resp, body, 400)
				resp, body = post(t, srv, tok, path, op.other, k)
				requireJSON(t, resp, body, 201, nil)
				n = effects(srv.Sim, "A123456")
			})
			t.Run("keys expire", func(t *testing.T) {
				clk.Advance(time.Second) // the first key is now op.keepFor old
				resp, body := post(t, srv, tok, path, op.other, key)
				requireJSON(t, resp, body, 201, nil)
				assert.Empty(t, resp.Header.Get("Idempotent-Replayed"))
				assert.Equal(t, n+1, effects(srv.Sim, "A123456"))
			})
			t.Run("without a key every POST creates", func(t *testing.T) {
				before := effects(srv.Sim, "A123456")
				for range 3 {
					resp, body := post(t, srv, tok, path, op.body, nil)
					requireJSON(t, resp, body, 201, nil)
				}
				assert.Equal(t, before+3, effects(srv.Sim, "A123456"))
			})
		})
	}
}

const apiBaseRoute = "/integrations/v1/{domain}/reporting/appointments"

// TestIdempotencyReplayAfterLeavingWorklist: a retry whose first attempt
// succeeded replays even if the appointment left PENDING REPORTING since.
func TestIdempotencyReplayAfterLeavingWorklist(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 20})
	tok := token(t, srv)
	key := map[string]string{"Idempotency-Key": "final-A123458"}
	body := `{"reportText":"x","reportStatus":"final"}`
	resp, first := post(t, srv, tok, apiPath("acme", "/A123458/report"), body, key)
	requireJSON(t, resp, first, 201, nil)
	srv.SetStatus("acme", "A123458", qubs.StatusAuthorised)
	resp, again := post(t, srv, tok, apiPath("acme", "/A123458/report"), body, key)
	requireJSON(t, resp, again, 201, nil)
	assert.Equal(t, string(first), string(again))
	resp, b := post(t, srv, tok, apiPath("acme", "/A123458/report"), body, nil)
	requireProblem(t, resp, b, 404)
}

func TestIdempotencyConcurrentSameKey(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 20})
	tok := token(t, srv)
	const n = 20
	var wg sync.WaitGroup
	bodies := make([]string, n)
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, srv.URL+apiPath("acme", "/A123456/comments"), strings.NewReader(`{"commentText":"once"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Idempotency-Key", "same-for-all")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			bodies[i], statuses[i] = string(b), resp.StatusCode
		}()
	}
	wg.Wait()
	for i := range n {
		assert.Equal(t, 201, statuses[i], strconv.Itoa(i))
		assert.Equal(t, bodies[0], bodies[i])
	}
	require.Len(t, srv.CreatedComments("acme", "A123456"), 1)
}
