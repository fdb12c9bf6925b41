package qubs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// The integration suite: the client against the simulator over real HTTP
// on loopback. Each test starts its own simulator.

// simEnv is a simulator, its fake clock and a client of it whose waits are
// recorded instead of slept.
type simEnv struct {
	sim    *qubssim.Server
	clk    *qubssim.FakeClock
	c      *qubs.Client
	mu     sync.Mutex
	sleeps []time.Duration
}

type envOpt struct {
	sim       func(*qubssim.Options)
	cfg       func(*qubs.Config)
	syncClock bool // the client's clock follows the simulator's fake clock
}

func newSimEnv(t *testing.T, o envOpt) *simEnv {
	t.Helper()
	// The fake clock starts at the real time: oauth2 stamps token expiry
	// with the real clock, and the client's view of time can then follow
	// the simulator's.
	e := &simEnv{clk: qubssim.NewFakeClock(time.Now())}
	so := qubssim.Options{Clock: e.clk, Appointments: 300}
	if o.sim != nil {
		o.sim(&so)
	}
	sim, err := qubssim.Start("127.0.0.1:0", so)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, sim.Close()) })
	e.sim = sim
	cfg := qubs.Config{
		BaseURL:      sim.URL,
		TokenURL:     sim.TokenURL(),
		ClientID:     qubssim.DefaultClientID,
		ClientSecret: qubssim.DefaultClientSecret,
		AuthStyle:    oauth2.AuthStyleInParams,
		// No keep-alives: http.Transport silently replays a GET or a keyed
		// POST that failed on a reused connection, which would hide the
		// client's own retries from the request counts.
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true, ExpectContinueTimeout: time.Second}},
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	c, err := qubs.New(cfg)
	require.NoError(t, err)
	qubs.SetSleep(c, func(ctx context.Context, d time.Duration) error {
		e.mu.Lock()
		e.sleeps = append(e.sleeps, d)
		e.mu.Unlock()
		return ctx.Err()
	})
	if o.syncClock {
		qubs.SetNow(c, e.clk.Now)
	}
	e.c = c
	return e
}

func (e *simEnv) slept() []time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]time.Duration(nil), e.sleeps...)
}

// pendingID returns a pending appointment of acme.
func (e *simEnv) pendingID(t *testing.T, i int) string {
	t.Helper()
	ids := e.sim.PendingIDs("acme")
	require.Greater(t, len(ids), i)
	return ids[i]
}

// requests returns the simulator's records of requests whose path holds
// route.
func (e *simEnv) requests(method, route string) []qubssim.RequestRecord {
	var out []qubssim.RequestRecord
	for _, r := range e.sim.Requests() {
		if r.Method == method && strings.Contains(r.Path, route) {
			out = append(out, r)
		}
	}
	return out
}

func kindOf(t *testing.T, err error) qubs.Kind {
	t.Helper()
	require.Error(t, err)
	var e *qubs.Error
	require.ErrorAs(t, err, &e, "every error is a *qubs.Error")
	return e.Kind
}

func report(text string) qubs.ReportSubmission {
	return qubs.ReportSubmission{ReportText: text, ReportStatus: "preliminary"}
}

func TestSimPagingSeesEveryAppointmentOnce(t *testing.T) {
	e := newSimEnv(t, envOpt{sim: func(o *qubssim.Options) { o.Appointments = 1500 }})
	want := e.sim.PendingIDs("acme")
	require.GreaterOrEqual(t, len(want), 1000)
	for _, size := range []int{0, 1, 37, 500} {
		t.Run(fmt.Sprintf("pageSize %d", size), func(t *testing.T) {
			if size == 1 && testing.Short() {
				t.Skip("a thousand pages")
			}
			seen := map[string]int{}
			for a, err := range e.c.Pending(context.Background(), "acme", size) {
				require.NoError(t, err)
				assert.Equal(t, qubs.StatusPendingReporting, a.Status)
				seen[a.AppointmentID]++
			}
			assert.Len(t, seen, len(want))
			for _, id := range want {
				assert.Equal(t, 1, seen[id], "appointment %s", id)
			}
		})
	}
	t.Run("pages end with a null nextToken and may be empty", func(t *testing.T) {
		pages, empty := 0, 0
		var last *qubs.AppointmentPage
		for p, err := range e.c.Pages(context.Background(), "acme", 7) {
			require.NoError(t, err)
			pages++
			if len(p.Items) == 0 {
				empty++
			}
			last = p
		}
		require.NotNil(t, last)
		assert.Nil(t, last.NextToken)
		assert.Greater(t, pages, len(want)/7)
		t.Logf("%d pages, %d empty", pages, empty)
	})
	t.Run("status changes during a walk", func(t *testing.T) {
		seen := map[string]int{}
		n := 0
		for a, err := range e.c.Pending(context.Background(), "acme", 50) {
			require.NoError(t, err)
			seen[a.AppointmentID]++
			if n++; n == 100 {
				// Report one still ahead in the walk; it must not appear.
				for _, id := range want {
					if seen[id] == 0 {
						require.True(t, e.sim.SetStatus("acme", id, qubs.StatusAuthorised))
						defer e.sim.SetStatus("acme", id, qubs.StatusPendingReporting)
						seen[id] = -1000
						break
					}
				}
			}
		}
		for id, c := range seen {
			assert.True(t, c == 1 || c == -1000, "appointment %s seen %d times", id, c)
		}
	})
	t.Run("bad pageSize refused before sending", func(t *testing.T) {
		before := len(e.sim.Requests())
		_, err := e.c.ListPending(context.Background(), "acme", 501, "")
		assert.Equal(t, qubs.KindInvalid, kindOf(t, err))
		assert.Len(t, e.sim.Requests(), before)
	})
	t.Run("tampered nextToken is invalid", func(t *testing.T) {
		_, err := e.c.ListPending(context.Background(), "acme", 10, "not-a-token")
		assert.Equal(t, qubs.KindInvalid, kindOf(t, err))
	})
}

func TestSimReadOperations(t *testing.T) {
	e := newSimEnv(t, envOpt{sim: func(o *qubssim.Options) {
		o.Clients = []qubssim.Client{{ID: qubssim.DefaultClientID, Secret: qubssim.DefaultClientSecret, Domains: []string{"acme"}}}
	}, syncClock: true})
	ctx := qubs.WithCorrelationID(context.Background(), "corr-read-1")
	id := e.pendingID(t, 3)
	content := []byte("%PDF-1.4 referral for the simulator test\n")
	guid := e.sim.PutAttachment("acme", id, qubs.Attachment{Category: "Referral", FileName: "referral.pdf"}, content)
	require.NotEmpty(t, guid)
	cguid := e.sim.PutComment("acme", qubs.Comment{AppointmentID: id, CommentType: qubs.CommentAppointment, CommentText: "wheelchair"})
	require.NotEmpty(t, cguid)

	t.Run("get pending", func(t *testing.T) {
		a, err := e.c.GetPending(ctx, "acme", id)
		require.NoError(t, err)
		want, ok := e.sim.Appointment("acme", id)
		require.True(t, ok)
		assert.Equal(t, want.AppointmentID, a.AppointmentID)
		assert.Equal(t, want.PatientName, a.PatientName)
		assert.Equal(t, qubs.StatusPendingReporting, a.Status)
	})
	t.Run("attachments and download", func(t *testing.T) {
		list, err := e.c.ListAttachments(ctx, "acme", id, qubs.AttachmentOptions{})
		require.NoError(t, err)
		var found *qubs.Attachment
		for i := range list {
			if list[i].GUID == guid {
				found = &list[i]
			}
		}
		require.NotNil(t, found)
		require.NotNil(t, found.URL)

		at, err := e.c.GetAttachment(ctx, "acme", id, guid, qubs.AttachmentOptions{URLTTLSeconds: 60, Disposition: qubs.DispositionAttachment})
		require.NoError(t, err)
		require.NotNil(t, at.URL)
		require.NotNil(t, at.URLExpiresAtUTC)
		assert.WithinDuration(t, e.clk.Now().Add(time.Minute), *at.URLExpiresAtUTC, 2*time.Second)

		d, err := e.c.Download(ctx, *at.URL)
		require.NoError(t, err)
		got, err := io.ReadAll(d.Body)
		require.NoError(t, d.Body.Close())
		require.NoError(t, err)
		assert.Equal(t, content, got)
		assert.Equal(t, int64(len(content)), d.ContentLength)
		assert.True(t, strings.HasPrefix(d.ContentDisposition, "attachment"), d.ContentDisposition)

		// Past its expiry the URL is refused by the store.
		e.clk.Advance(61 * time.Second)
		_, err = e.c.Download(ctx, *at.URL)
		assert.Equal(t, qubs.KindExpired, kindOf(t, err))
		// A tampered URL fails its signature.
		_, err = e.c.Download(ctx, *at.URL+"x")
		assert.NotEqual(t, qubs.KindInternal, kindOf(t, err))
	})
	t.Run("comments", func(t *testing.T) {
		list, err := e.c.ListComments(ctx, "acme", id)
		require.NoError(t, err)
		var guids []string
		for _, c := range list {
			guids = append(guids, c.GUID)
		}
		assert.Contains(t, guids, cguid)
		c, err := e.c.GetComment(ctx, "acme", id, cguid)
		require.NoError(t, err)
		assert.Equal(t, "wheelchair", c.CommentText)
		_, err = e.c.GetComment(ctx, "acme", id, "no-such-guid")
		assert.Equal(t, qubs.KindNotFound, kindOf(t, err))
		_, err = e.c.GetAttachment(ctx, "acme", id, "no-such-guid", qubs.AttachmentOptions{})
		assert.Equal(t, qubs.KindNotFound, kindOf(t, err))
	})
	t.Run("404 when not pending", func(t *testing.T) {
		other := e.pendingID(t, 4)
		require.True(t, e.sim.SetStatus("acme", other, qubs.StatusAuthorised))
		ops := map[string]func() error{
			"GetPending":      func() error { _, err := e.c.GetPending(ctx, "acme", other); return err },
			"ListAttachments": func() error { _, err := e.c.ListAttachments(ctx, "acme", other, qubs.AttachmentOptions{}); return err },
			"ListComments":    func() error { _, err := e.c.ListComments(ctx, "acme", other); return err },
			"CreateComment": func() error {
				_, err := e.c.CreateComment(ctx, "acme", other, qubs.NewComment{CommentText: "x"}, "k-404-c")
				return err
			},
			"SubmitReport":     func() error { _, err := e.c.SubmitReport(ctx, "acme", other, report("x"), "k-404-r"); return err },
			"CreateUploadURLs": func() error { _, err := e.c.CreateUploadURLs(ctx, "acme", other, pdfRequest(), "k-404-u"); return err },
			"unknown id":       func() error { _, err := e.c.GetPending(ctx, "acme", "NOPE-1"); return err },
		}
		for name, op := range ops {
			t.Run(name, func(t *testing.T) {
				err := op()
				assert.Equal(t, qubs.KindNotFound, kindOf(t, err))
				var qe *qubs.Error
				require.ErrorAs(t, err, &qe)
				assert.Equal(t, 404, qe.Status)
				require.NotNil(t, qe.Problem)
				assert.NotEmpty(t, qe.RequestID)
				assert.Equal(t, "corr-read-1", qe.CorrelationID)
				assert.True(t, errors.Is(err, qubs.ErrNotFound))
			})
		}
	})
	t.Run("403 for another domain", func(t *testing.T) {
		doms := e.sim.Domains()
		require.Greater(t, len(doms), 1)
		other := doms[1]
		_, err := e.c.ListPending(ctx, other, 10, "")
		assert.Equal(t, qubs.KindForbidden, kindOf(t, err))
		_, err = e.c.SubmitReport(ctx, other, "X1", report("x"), "k-403")
		assert.Equal(t, qubs.KindForbidden, kindOf(t, err))
	})
	t.Run("correlation ids round-trip", func(t *testing.T) {
		for _, r := range e.sim.Requests() {
			if strings.HasPrefix(r.Path, "/integrations/") {
				assert.Equal(t, "corr-read-1", r.CorrelationID, "%s %s", r.Method, r.Path)
			}
		}
	})
}

func pdfRequest() qubs.UploadRequest {
	pdf := qubs.ContentTypePDF
	return qubs.UploadRequest{Items: []qubs.UploadItem{{FileName: "report.pdf", ContentType: &pdf}}}
}

func TestSimCommentsAndReportsAreIdempotent(t *testing.T) {
	e := newSimEnv(t, envOpt{})
	ctx := qubs.WithCorrelationID(context.Background(), "corr-post")
	id := e.pendingID(t, 0)

	t.Run("comment replay and conflict", func(t *testing.T) {
		in := qubs.NewComment{CommentText: "Report sent to referrer."}
		key := qubs.DeriveIdempotencyKey("comment", []byte(id), []byte(in.CommentText))
		c1, err := e.c.CreateComment(ctx, "acme", id, in, key)
		require.NoError(t, err)
		c2, err := e.c.CreateComment(ctx, "acme", id, in, key)
		require.NoError(t, err)
		assert.Equal(t, c1.GUID, c2.GUID, "the original answer")
		assert.Equal(t, qubs.CommentAppointment, c1.CommentType)
		_, err = e.c.CreateComment(ctx, "acme", id, qubs.NewComment{CommentText: "other"}, key)
		assert.Equal(t, qubs.KindConflict, kindOf(t, err))
		recs := e.sim.CreatedComments("acme", id)
		require.Len(t, recs, 1)
		assert.Equal(t, key, recs[0].IdempotencyKey)
		assert.Equal(t, "corr-post", recs[0].CorrelationID)
		got, err := e.c.GetComment(ctx, "acme", id, c1.GUID)
		require.NoError(t, err)
		assert.Equal(t, in.CommentText, got.CommentText)
	})
	t.Run("report replay and conflict", func(t *testing.T) {
		r1, err := e.c.SubmitReport(ctx, "acme", id, report("No acute abnormality."), "rep-key-1")
		require.NoError(t, err)
		r2, err := e.c.SubmitReport(ctx, "acme", id, report("No acute abnormality."), "rep-key-1")
		require.NoError(t, err)
		assert.Equal(t, r1, r2)
		_, err = e.c.SubmitReport(ctx, "acme", id, report("Changed."), "rep-key-1")
		var qe *qubs.Error
		require.ErrorAs(t, err, &qe)
		assert.Equal(t, qubs.KindConflict, qe.Kind)
		assert.Equal(t, 409, qe.Status)
		assert.Equal(t, "corr-post", qe.CorrelationID)
		recs := e.sim.Reports("acme", id)
		require.Len(t, recs, 1)
		assert.Equal(t, "rep-key-1", recs[0].IdempotencyKey)
		assert.Equal(t, "No acute abnormality.", recs[0].Submission.ReportText)
		// A final report under a new key overwrites and keeps the GUID.
		r3, err := e.c.SubmitReport(ctx, "acme", id, qubs.ReportSubmission{ReportText: "Final.", ReportStatus: "FINAL"}, "rep-key-2")
		require.NoError(t, err)
		assert.Equal(t, r1.ReportGUID, r3.ReportGUID)
		assert.Equal(t, "final", r3.ReportStatus)
		assert.Len(t, e.sim.Reports("acme", id), 2)
	})
}

// TestSimRetriesCreateOneRecord injects faults into the report POST and
// checks that the client's retries, all with the same key and body, leave
// exactly one report in the simulator.
func TestSimRetriesCreateOneRecord(t *testing.T) {
	cases := []struct {
		name       string
		fault      qubssim.Fault
		wantSleeps []time.Duration // nil: only the count is checked
		wantSent   int
	}{
		{"429 with Retry-After seconds", qubssim.Fault{Count: 2, Status: 429, RetryAfter: "3"}, []time.Duration{3 * time.Second, 3 * time.Second}, 3},
		{"503", qubssim.Fault{Count: 3, Status: 503}, nil, 4},
		{"dropped connection", qubssim.Fault{Count: 2, Drop: true}, nil, 3},
		{"lost response: dropped after handling", qubssim.Fault{Count: 1, Drop: true, AfterHandling: true}, nil, 2},
		{"lost response: 502 after handling", qubssim.Fault{Count: 2, Status: 502, AfterHandling: true}, nil, 3},
		{"latency only", qubssim.Fault{Count: 1, Latency: time.Millisecond}, nil, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newSimEnv(t, envOpt{})
			id := e.pendingID(t, 1)
			require.NoError(t, e.c.Token(context.Background()))
			f := tc.fault
			f.Method, f.Route = http.MethodPost, "/report"
			e.sim.AddFault(f)
			ctx := qubs.WithCorrelationID(context.Background(), "corr-retry")
			r, err := e.c.SubmitReport(ctx, "acme", id, report("Stable text."), "retry-key-1")
			require.NoError(t, err)
			recs := e.sim.Reports("acme", id)
			require.Len(t, recs, 1, "exactly one report")
			assert.Equal(t, recs[0].ReportGUID, r.ReportGUID)
			sent := e.requests(http.MethodPost, "/report")
			assert.Len(t, sent, tc.wantSent)
			for _, s := range sent {
				assert.Equal(t, "retry-key-1", s.IdempotencyKey)
				assert.Equal(t, "corr-retry", s.CorrelationID)
			}
			if tc.fault.AfterHandling {
				assert.True(t, sent[len(sent)-1].Replayed, "the last answer is the replay of the lost one")
			}
			if tc.wantSleeps != nil {
				assert.Equal(t, tc.wantSleeps, e.slept())
			}
			assert.Len(t, e.slept(), tc.wantSent-1)
		})
	}
	t.Run("without a key nothing is retried", func(t *testing.T) {
		e := newSimEnv(t, envOpt{})
		id := e.pendingID(t, 1)
		e.sim.AddFault(qubssim.Fault{Method: http.MethodPost, Route: "/comments", Count: 1, Status: 503, AfterHandling: true})
		_, err := e.c.CreateComment(context.Background(), "acme", id, qubs.NewComment{CommentText: "x"}, "")
		assert.Equal(t, qubs.KindTransient, kindOf(t, err))
		assert.Len(t, e.requests(http.MethodPost, "/comments"), 1)
		// The comment was made although the caller saw an error: why the
		// bridge always sends a key.
		assert.Len(t, e.sim.CreatedComments("acme", id), 1)
	})
	t.Run("comments and upload URLs too", func(t *testing.T) {
		e := newSimEnv(t, envOpt{})
		id := e.pendingID(t, 2)
		e.sim.AddFault(qubssim.Fault{Method: http.MethodPost, Route: "/comments", Count: 1, Drop: true, AfterHandling: true})
		e.sim.AddFault(qubssim.Fault{Method: http.MethodPost, Route: "/report/attachments", Count: 1, Status: 500, AfterHandling: true})
		_, err := e.c.CreateComment(context.Background(), "acme", id, qubs.NewComment{CommentText: "x"}, "c-key")
		require.NoError(t, err)
		assert.Len(t, e.sim.CreatedComments("acme", id), 1)
		urls, err := e.c.CreateUploadURLs(context.Background(), "acme", id, pdfRequest(), "u-key")
		require.NoError(t, err)
		require.Len(t, urls.Items, 1)
		assert.Len(t, e.sim.Uploads("acme", id), 1)
	})
	t.Run("GET retried on 429 HTTP-date, 503 and drops", func(t *testing.T) {
		e := newSimEnv(t, envOpt{syncClock: true})
		when := e.clk.Now().Add(5 * time.Second).UTC().Format(http.TimeFormat)
		e.sim.AddFault(qubssim.Fault{Method: http.MethodGet, Route: "/pending", Count: 1, Status: 429, RetryAfter: when})
		e.sim.AddFault(qubssim.Fault{Method: http.MethodGet, Route: "/pending", Count: 1, Status: 503})
		e.sim.AddFault(qubssim.Fault{Method: http.MethodGet, Route: "/pending", Count: 1, Drop: true})
		p, err := e.c.ListPending(context.Background(), "acme", 5, "")
		require.NoError(t, err)
		assert.NotNil(t, p)
		assert.Len(t, e.requests(http.MethodGet, "/pending"), 4)
		s := e.slept()
		require.Len(t, s, 3)
		assert.InDelta(t, 5*time.Second, s[0], float64(time.Second), "HTTP-date honoured")
	})
	t.Run("Retry-After beyond MaxRetryAfter gives up", func(t *testing.T) {
		e := newSimEnv(t, envOpt{})
		e.sim.AddFault(qubssim.Fault{Method: http.MethodGet, Route: "/pending", Count: 1, Status: 429, RetryAfter: "3600"})
		_, err := e.c.ListPending(context.Background(), "acme", 5, "")
		var qe *qubs.Error
		require.ErrorAs(t, err, &qe)
		assert.Equal(t, qubs.KindTransient, qe.Kind)
		assert.Equal(t, 429, qe.Status)
		assert.Len(t, e.requests(http.MethodGet, "/pending"), 1)
	})
	t.Run("attempts run out", func(t *testing.T) {
		e := newSimEnv(t, envOpt{cfg: func(c *qubs.Config) { c.Retry.MaxAttempts = 3 }})
		e.sim.AddFault(qubssim.Fault{Method: http.MethodGet, Route: "/pending", Status: 503})
		_, err := e.c.ListPending(context.Background(), "acme", 5, "")
		assert.Equal(t, qubs.KindTransient, kindOf(t, err))
		assert.Len(t, e.requests(http.MethodGet, "/pending"), 3)
	})
	t.Run("409 is not retried", func(t *testing.T) {
		e := newSimEnv(t, envOpt{})
		e.sim.AddFault(qubssim.Fault{Method: http.MethodPost, Route: "/report", Count: 1, Status: 409})
		_, err := e.c.SubmitReport(context.Background(), "acme", e.pendingID(t, 0), report("x"), "k409")
		assert.Equal(t, qubs.KindConflict, kindOf(t, err))
		assert.Len(t, e.requests(http.MethodPost, "/report"), 1)
	})
	t.Run("default transport keeps exactly one record", func(t *testing.T) {
		// With keep-alives, Go's transport may replay the keyed POST on
		// its own; the key still makes it one report.
		e := newSimEnv(t, envOpt{cfg: func(c *qubs.Config) { c.HTTPClient = nil }})
		id := e.pendingID(t, 5)
		require.NoError(t, e.c.Token(context.Background()))
		e.sim.AddFault(qubssim.Fault{Method: http.MethodPost, Route: "/report", Count: 2, Drop: true, AfterHandling: true})
		_, err := e.c.SubmitReport(context.Background(), "acme", id, report("x"), "ka-key")
		require.NoError(t, err)
		assert.Len(t, e.sim.Reports("acme", id), 1)
	})
}

func TestSimTokens(t *testing.T) {
	t.Run("expired by the server's clock: one renewal", func(t *testing.T) {
		e := newSimEnv(t, envOpt{})
		id := e.pendingID(t, 0)
		_, err := e.c.GetPending(context.Background(), "acme", id)
		require.NoError(t, err)
		require.Len(t, e.sim.TokenRequests(), 1)
		e.clk.Advance(61 * time.Minute)
		// The client still believes its token; QUBS says 401; the client
		// renews once and succeeds, even for a POST without a key.
		_, err = e.c.CreateComment(context.Background(), "acme", id, qubs.NewComment{CommentText: "after expiry"}, "")
		require.NoError(t, err)
		treqs := e.sim.TokenRequests()
		require.Len(t, treqs, 2)
		for _, tr := range treqs {
			assert.True(t, tr.OK)
			assert.Equal(t, "client_credentials", tr.GrantType)
			assert.Equal(t, "client_secret_post", tr.AuthMethod)
		}
		posts := e.requests(http.MethodPost, "/comments")
		require.Len(t, posts, 2)
		assert.Equal(t, 401, posts[0].Status)
		assert.Equal(t, 201, posts[1].Status)
		assert.Len(t, e.sim.CreatedComments("acme", id), 1)
	})
	t.Run("renewed before expiry by the client's clock", func(t *testing.T) {
		e := newSimEnv(t, envOpt{syncClock: true})
		id := e.pendingID(t, 0)
		_, err := e.c.GetPending(context.Background(), "acme", id)
		require.NoError(t, err)
		e.clk.Advance(30 * time.Minute)
		_, err = e.c.GetPending(context.Background(), "acme", id)
		require.NoError(t, err)
		assert.Len(t, e.sim.TokenRequests(), 1, "still valid: reused")
		e.clk.Advance(29*time.Minute + 30*time.Second)
		_, err = e.c.GetPending(context.Background(), "acme", id)
		require.NoError(t, err)
		assert.Len(t, e.sim.TokenRequests(), 2, "renewed inside the expiry delta")
		for _, r := range e.sim.Requests() {
			assert.NotEqual(t, 401, r.Status, "no request left with a dying token")
		}
	})
	t.Run("shared by concurrent callers", func(t *testing.T) {
		e := newSimEnv(t, envOpt{})
		ids := e.sim.PendingIDs("acme")
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				_, err := e.c.GetPending(context.Background(), "acme", ids[i])
				assert.NoError(t, err)
			})
		}
		wg.Wait()
		assert.Len(t, e.sim.TokenRequests(), 1)
	})
	t.Run("basic auth", func(t *testing.T) {
		e := newSimEnv(t, envOpt{cfg: func(c *qubs.Config) { c.AuthStyle = oauth2.AuthStyleInHeader }})
		require.NoError(t, e.c.Token(context.Background()))
		treqs := e.sim.TokenRequests()
		require.Len(t, treqs, 1)
		assert.Equal(t, "client_secret_basic", treqs[0].AuthMethod)
		assert.True(t, treqs[0].OK)
	})
	t.Run("auto-detect", func(t *testing.T) {
		e := newSimEnv(t, envOpt{cfg: func(c *qubs.Config) { c.AuthStyle = oauth2.AuthStyleAutoDetect }})
		require.NoError(t, e.c.Token(context.Background()))
		assert.True(t, e.sim.TokenRequests()[0].OK)
	})
	t.Run("wrong secret", func(t *testing.T) {
		e := newSimEnv(t, envOpt{cfg: func(c *qubs.Config) { c.ClientSecret = "wrong-secret" }})
		err := e.c.Token(context.Background())
		var qe *qubs.Error
		require.ErrorAs(t, err, &qe)
		assert.Equal(t, qubs.KindUnauthorized, qe.Kind)
		assert.Equal(t, 401, qe.Status)
		assert.Contains(t, err.Error(), "invalid_client")
		assert.NotContains(t, err.Error(), "wrong-secret")
		_, err = e.c.ListPending(context.Background(), "acme", 1, "")
		assert.Equal(t, qubs.KindUnauthorized, kindOf(t, err))
		assert.Empty(t, e.requests(http.MethodGet, "/pending"), "no API call without a token")
	})
	t.Run("token endpoint 503 then ok", func(t *testing.T) {
		e := newSimEnv(t, envOpt{})
		e.sim.AddFault(qubssim.Fault{Route: "/oauth2/token", Count: 1, Status: 503})
		err := e.c.Token(context.Background())
		assert.Equal(t, qubs.KindTransient, kindOf(t, err), "Token makes one attempt")
		e.sim.AddFault(qubssim.Fault{Route: "/oauth2/token", Count: 2, Status: 503})
		_, err = e.c.ListPending(context.Background(), "acme", 1, "")
		require.NoError(t, err, "API calls retry a failed token request")
	})
}

func TestSimUploads(t *testing.T) {
	ctx := context.Background()
	artifact := bytes.Repeat([]byte("%PDF-1.7 report artifact "), 4000) // ~100 KB
	sum := sha256.Sum256(artifact)

	setup := func(t *testing.T, o envOpt) (*simEnv, string, qubs.UploadURL) {
		t.Helper()
		e := newSimEnv(t, o)
		id := e.pendingID(t, 0)
		urls, err := e.c.CreateUploadURLs(ctx, "acme", id, pdfRequest(), qubs.DeriveIdempotencyKey("upload", []byte(id)))
		require.NoError(t, err)
		require.Len(t, urls.Items, 1)
		u := urls.Items[0]
		require.NotEmpty(t, u.UploadURL)
		require.NotNil(t, u.UploadURLExpiresAtUTC)
		return e, id, u
	}

	t.Run("success: the bytes arrive intact", func(t *testing.T) {
		e, id, u := setup(t, envOpt{syncClock: true})
		puts0 := len(e.requests(http.MethodPut, "/presigned/"))
		err := e.c.Upload(ctx, u, qubs.ContentTypePDF, int64(len(artifact)), bytes.NewReader(artifact))
		require.NoError(t, err)
		ups := e.sim.Uploads("acme", id)
		require.Len(t, ups, 1)
		assert.True(t, ups[0].Uploaded)
		assert.Equal(t, hex.EncodeToString(sum[:]), ups[0].SHA256)
		assert.Equal(t, int64(len(artifact)), ups[0].Size)
		assert.Equal(t, qubs.ContentTypePDF, ups[0].PutContentType)
		assert.Len(t, e.requests(http.MethodPut, "/presigned/"), puts0+1)

		// The uploaded artifact is listed and downloads identically.
		at, err := e.c.GetAttachment(ctx, "acme", id, u.GUID, qubs.AttachmentOptions{})
		require.NoError(t, err)
		require.NotNil(t, at.URL)
		d, err := e.c.Download(ctx, *at.URL)
		require.NoError(t, err)
		got, err := io.ReadAll(d.Body)
		require.NoError(t, d.Body.Close())
		require.NoError(t, err)
		assert.Equal(t, artifact, got)

		t.Run("second PUT refused", func(t *testing.T) {
			err := e.c.Upload(ctx, u, qubs.ContentTypePDF, int64(len(artifact)), bytes.NewReader(artifact))
			assert.Equal(t, qubs.KindConflict, kindOf(t, err))
		})
	})
	t.Run("too large: refused before sending", func(t *testing.T) {
		e, _, u := setup(t, envOpt{syncClock: true})
		big := make([]byte, qubs.MaxUploadBytes+1)
		err := e.c.Upload(ctx, u, qubs.ContentTypePDF, int64(len(big)), bytes.NewReader(big))
		assert.Equal(t, qubs.KindTooLarge, kindOf(t, err))
		assert.Empty(t, e.requests(http.MethodPut, "/presigned/"))
	})
	t.Run("exactly the limit", func(t *testing.T) {
		e, id, u := setup(t, envOpt{syncClock: true})
		limit := make([]byte, qubs.MaxUploadBytes)
		require.NoError(t, e.c.Upload(ctx, u, qubs.ContentTypePDF, int64(len(limit)), bytes.NewReader(limit)))
		assert.Equal(t, int64(qubs.MaxUploadBytes), e.sim.Uploads("acme", id)[0].Size)
	})
	t.Run("wrong content type", func(t *testing.T) {
		e, id, u := setup(t, envOpt{syncClock: true})
		err := e.c.Upload(ctx, u, qubs.ContentTypeDICOM, int64(len(artifact)), bytes.NewReader(artifact))
		assert.Equal(t, qubs.KindInvalid, kindOf(t, err))
		assert.False(t, e.sim.Uploads("acme", id)[0].Uploaded)
	})
	t.Run("expired URL refused by the store", func(t *testing.T) {
		// The client's clock is real here, so only the store knows.
		e, id, u := setup(t, envOpt{})
		e.clk.Advance(16 * time.Minute)
		err := e.c.Upload(ctx, u, qubs.ContentTypePDF, int64(len(artifact)), bytes.NewReader(artifact))
		var qe *qubs.Error
		require.ErrorAs(t, err, &qe)
		assert.Equal(t, qubs.KindExpired, qe.Kind)
		assert.Equal(t, 403, qe.Status)
		assert.Contains(t, err.Error(), "request a new URL")
		assert.False(t, e.sim.Uploads("acme", id)[0].Uploaded)
		assert.Len(t, e.requests(http.MethodPut, "/presigned/"), 1)
	})
	t.Run("expired URL refused before sending", func(t *testing.T) {
		e, _, u := setup(t, envOpt{syncClock: true})
		e.clk.Advance(15 * time.Minute)
		err := e.c.Upload(ctx, u, qubs.ContentTypePDF, int64(len(artifact)), bytes.NewReader(artifact))
		assert.Equal(t, qubs.KindExpired, kindOf(t, err))
		assert.Contains(t, err.Error(), "expired")
		assert.Empty(t, e.requests(http.MethodPut, "/presigned/"))
	})
	t.Run("short body", func(t *testing.T) {
		e, id, u := setup(t, envOpt{syncClock: true})
		err := e.c.Upload(ctx, u, qubs.ContentTypePDF, int64(len(artifact))+1, bytes.NewReader(artifact))
		assert.Equal(t, qubs.KindInvalid, kindOf(t, err))
		assert.False(t, e.sim.Uploads("acme", id)[0].Uploaded)
	})
	t.Run("tampered URL", func(t *testing.T) {
		e, _, u := setup(t, envOpt{syncClock: true})
		u.UploadURL += "A"
		err := e.c.Upload(ctx, u, qubs.ContentTypePDF, int64(len(artifact)), bytes.NewReader(artifact))
		assert.Equal(t, qubs.KindInvalid, kindOf(t, err))
		assert.NotContains(t, err.Error(), u.UploadURL)
	})
	t.Run("replayed upload URLs and no bearer token at the store", func(t *testing.T) {
		e, id, u := setup(t, envOpt{syncClock: true})
		again, err := e.c.CreateUploadURLs(ctx, "acme", id, pdfRequest(), qubs.DeriveIdempotencyKey("upload", []byte(id)))
		require.NoError(t, err)
		assert.Equal(t, u.GUID, again.Items[0].GUID)
		assert.Len(t, e.sim.Uploads("acme", id), 1)
		require.NoError(t, e.c.Upload(ctx, u, qubs.ContentTypePDF, 3, strings.NewReader("abc")))
	})
}

// TestSimNoBearerAtTheStore puts a recording proxy in front of the
// simulator's presigned URLs and checks what the client sends there.
func TestSimNoBearerAtTheStore(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	e := newSimEnv(t, envOpt{syncClock: true})
	rec := &recordingTransport{base: http.DefaultTransport, record: func(r *http.Request) {
		if strings.Contains(r.URL.Path, "/presigned/") {
			mu.Lock()
			seen = append(seen, r.Header.Clone())
			mu.Unlock()
		}
	}}
	c, err := qubs.New(qubs.Config{BaseURL: e.sim.URL, TokenURL: e.sim.TokenURL(), ClientID: qubssim.DefaultClientID,
		ClientSecret: qubssim.DefaultClientSecret, HTTPClient: &http.Client{Transport: rec}})
	require.NoError(t, err)
	qubs.SetNow(c, e.clk.Now)
	id := e.pendingID(t, 0)
	urls, err := c.CreateUploadURLs(context.Background(), "acme", id, pdfRequest(), "k-store")
	require.NoError(t, err)
	require.NoError(t, c.Upload(context.Background(), urls.Items[0], qubs.ContentTypePDF, 4, strings.NewReader("%PDF")))
	at, err := c.GetAttachment(context.Background(), "acme", id, urls.Items[0].GUID, qubs.AttachmentOptions{})
	require.NoError(t, err)
	d, err := c.Download(context.Background(), *at.URL)
	require.NoError(t, err)
	require.NoError(t, d.Body.Close())
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, 2)
	for _, h := range seen {
		assert.Empty(t, h.Get("Authorization"))
	}
}

type recordingTransport struct {
	base   http.RoundTripper
	record func(*http.Request)
}

func (t *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.record(r)
	return t.base.RoundTrip(r)
}
