package qubs

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
)

const (
	testClientID     = "client-id"
	testClientSecret = "s3cret-value"
)

// tokenServer is a counting OAuth2 token endpoint. It issues "tok-1",
// "tok-2", ... and can be told to fail or to hold requests.
type tokenServer struct {
	*httptest.Server
	count     atomic.Int32
	expiresIn atomic.Int64
	// fail, when set, answers every request with this status and error code.
	failStatus atomic.Int32
	failCode   atomic.Value // string
	failTimes  atomic.Int32 // how many requests fail; 0 means all while failStatus is set
	// hold, when set, makes requests wait until it is closed; entered is
	// closed when the first request arrives.
	hold    atomic.Pointer[chan struct{}]
	entered chan struct{}
	once    sync.Once

	mu      sync.Mutex
	methods []string // client auth method of each request
}

func newTokenServer(t *testing.T) *tokenServer {
	t.Helper()
	ts := &tokenServer{entered: make(chan struct{})}
	ts.expiresIn.Store(3600)
	ts.failCode.Store("")
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := ts.count.Add(1)
		ts.once.Do(func() { close(ts.entered) })
		if h := ts.hold.Load(); h != nil {
			<-*h
		}
		require.NoError(t, r.ParseForm())
		method := ""
		id, secret, basic := r.BasicAuth()
		switch {
		case basic:
			method = "basic"
		case r.PostForm.Has("client_secret"):
			method = "post"
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		ts.mu.Lock()
		ts.methods = append(ts.methods, method)
		ts.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if st := ts.failStatus.Load(); st != 0 && (ts.failTimes.Load() == 0 || n <= ts.failTimes.Load()) {
			w.WriteHeader(int(st))
			fmt.Fprintf(w, `{"error":%q,"error_description":"nope %s"}`, ts.failCode.Load().(string), testClientSecret)
			return
		}
		if id != testClientID || secret != testClientSecret || r.PostForm.Get("grant_type") != "client_credentials" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client"}`)
			return
		}
		fmt.Fprintf(w, `{"access_token":"tok-%d","token_type":"Bearer","expires_in":%d,"refresh_token":"r"}`, n, ts.expiresIn.Load())
	}))
	t.Cleanup(ts.Close)
	return ts
}

// waitClosed waits for ch to be closed, failing the test after a deadline.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func (ts *tokenServer) authMethods() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.methods...)
}

// sleeps records the waits of a client instead of waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

type fixture struct {
	c      *Client
	tokens *tokenServer
	api    *httptest.Server
	sleeps *sleeps
}

// newFixture returns a client of an API served by h, with a counting token
// server, recorded (not real) sleeps and no jitter.
func newFixture(t *testing.T, h http.HandlerFunc, mod ...func(*Config)) *fixture {
	t.Helper()
	ts := newTokenServer(t)
	api := httptest.NewServer(h)
	t.Cleanup(api.Close)
	cfg := Config{BaseURL: api.URL, TokenURL: ts.URL, ClientID: testClientID, ClientSecret: testClientSecret,
		AuthStyle: oauth2.AuthStyleInParams}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := New(cfg)
	require.NoError(t, err)
	f := &fixture{c: c, tokens: ts, api: api, sleeps: &sleeps{}}
	c.sleep = f.sleeps.sleep
	c.jitter = func(d time.Duration) time.Duration { return d }
	return f
}

// noKeepAlive makes every request use a fresh connection, so that
// http.Transport never replays a request on its own after a dropped
// connection and request counts are the client's alone.
func noKeepAlive(cfg *Config) {
	cfg.HTTPClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
}

func problem(w http.ResponseWriter, status int, title string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Correlation-Id", "echoed-corr")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":"about:blank","title":%q,"status":%d,"detail":"patient Jane Doe","requestId":"req-%d"}`, title, status, status)
}

const emptyPage = `{"items":[],"nextToken":null}`

// script answers requests in turn with the given statuses (0 = 200 with
// body ok), then 200; it counts requests and keeps their headers and bodies.
type script struct {
	mu       sync.Mutex
	statuses []int
	header   map[string]string // extra headers on error answers
	ok       string
	okStatus int
	reqs     []*http.Request
	bodies   []string
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, r)
	s.bodies = append(s.bodies, string(b))
	st := 0
	if len(s.statuses) > 0 {
		st, s.statuses = s.statuses[0], s.statuses[1:]
	}
	s.mu.Unlock()
	if st == -2 { // a 200 whose body is cut short
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, `{"appointmentId":`)
		return
	}
	if st == -1 { // drop the connection
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return
	}
	if st != 0 {
		for k, v := range s.header {
			w.Header().Set(k, v)
		}
		problem(w, st, http.StatusText(st))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if s.okStatus != 0 {
		w.WriteHeader(s.okStatus)
	}
	fmt.Fprint(w, s.ok)
}

func (s *script) n() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

func TestKindForStatus(t *testing.T) {
	cases := map[int]Kind{
		400: KindInvalid, 401: KindUnauthorized, 403: KindForbidden, 404: KindNotFound,
		405: KindInvalid, 408: KindTransient, 409: KindConflict, 410: KindNotFound,
		413: KindTooLarge, 415: KindInvalid, 422: KindInvalid, 429: KindTransient,
		500: KindTransient, 502: KindTransient, 503: KindTransient, 504: KindTransient,
		302: KindInternal, 600: KindInternal,
	}
	for status, want := range cases {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			assert.Equal(t, want, kindForStatus(status))
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 10, 3, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		in   string
		want time.Duration
		ok   bool
	}{
		{"absent", "", 0, false},
		{"seconds", "7", 7 * time.Second, true},
		{"zero", "0", 0, true},
		{"spaces", " 3 ", 3 * time.Second, true},
		{"http date", "Fri, 10 Jan 2025 03:00:30 GMT", 30 * time.Second, true},
		{"rfc850 date", "Friday, 10-Jan-25 03:01:00 GMT", time.Minute, true},
		{"asctime date", "Fri Jan 10 03:00:05 2025", 5 * time.Second, true},
		{"past date", "Fri, 10 Jan 2025 02:00:00 GMT", 0, true},
		{"negative", "-5", 0, false},
		{"fraction", "1.5", 0, false},
		{"garbage", "soon", 0, false},
		{"overflow", "99999999999999999999999", maxDuration, true},
		{"huge", "9223372036854775807", maxDuration, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseRetryAfter(tc.in, now)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestBackoff(t *testing.T) {
	p := RetryPolicy{}.withDefaults()
	assert.Equal(t, []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond},
		[]time.Duration{backoff(p, 1), backoff(p, 2), backoff(p, 3)})
	assert.Equal(t, 10*time.Second, backoff(p, 10))
	assert.Equal(t, 10*time.Second, backoff(p, 1000), "no overflow")
	for range 1000 {
		d := fullJitter(time.Second)
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.LessOrEqual(t, d, time.Second)
	}
	assert.Equal(t, time.Duration(0), fullJitter(0))
}

func TestRetries(t *testing.T) {
	post := func(c *Client, key string) error {
		_, err := c.SubmitReport(context.Background(), "acme", "A1",
			ReportSubmission{ReportText: "x", ReportStatus: "final"}, key)
		return err
	}
	get := func(c *Client, _ string) error {
		_, err := c.GetPending(context.Background(), "acme", "A1")
		return err
	}
	cases := []struct {
		name      string
		call      func(*Client, string) error
		key       string
		statuses  []int
		header    map[string]string
		wantKind  Kind // KindInternal here means success
		wantOK    bool
		wantReqs  int
		wantSleep []time.Duration
	}{
		{name: "get 503 then ok", call: get, statuses: []int{503, 502}, wantOK: true, wantReqs: 3,
			wantSleep: []time.Duration{200 * time.Millisecond, 400 * time.Millisecond}},
		{name: "get 500 until attempts run out", call: get, statuses: []int{500, 500, 500, 500, 500, 500},
			wantKind: KindTransient, wantReqs: 5, wantSleep: []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond}},
		{name: "get 429 retry-after seconds", call: get, statuses: []int{429}, header: map[string]string{"Retry-After": "7"},
			wantOK: true, wantReqs: 2, wantSleep: []time.Duration{7 * time.Second}},
		{name: "get 503 retry-after honoured", call: get, statuses: []int{503}, header: map[string]string{"Retry-After": "2"},
			wantOK: true, wantReqs: 2, wantSleep: []time.Duration{2 * time.Second}},
		{name: "get 429 unreadable retry-after backs off", call: get, statuses: []int{429}, header: map[string]string{"Retry-After": "later"},
			wantOK: true, wantReqs: 2, wantSleep: []time.Duration{200 * time.Millisecond}},
		{name: "get 429 retry-after too long", call: get, statuses: []int{429}, header: map[string]string{"Retry-After": "61"},
			wantKind: KindTransient, wantReqs: 1},
		{name: "get 408 retried", call: get, statuses: []int{408}, wantOK: true, wantReqs: 2, wantSleep: []time.Duration{200 * time.Millisecond}},
		{name: "get dropped connection retried", call: get, statuses: []int{-1, -1}, wantOK: true, wantReqs: 3,
			wantSleep: []time.Duration{200 * time.Millisecond, 400 * time.Millisecond}},
		{name: "get body cut short retried", call: get, statuses: []int{-2}, wantOK: true, wantReqs: 2,
			wantSleep: []time.Duration{200 * time.Millisecond}},
		{name: "post with key body cut short retried", call: post, key: "k-1", statuses: []int{-2}, wantOK: true, wantReqs: 2,
			wantSleep: []time.Duration{200 * time.Millisecond}},
		{name: "post without key body cut short not retried", call: post, statuses: []int{-2}, wantKind: KindTransient, wantReqs: 1},
		{name: "get 404 not retried", call: get, statuses: []int{404}, wantKind: KindNotFound, wantReqs: 1},
		{name: "get 400 not retried", call: get, statuses: []int{400}, wantKind: KindInvalid, wantReqs: 1},
		{name: "get 403 not retried", call: get, statuses: []int{403}, wantKind: KindForbidden, wantReqs: 1},
		{name: "post with key 503 retried", call: post, key: "k-1", statuses: []int{503, 429}, wantOK: true, wantReqs: 3,
			wantSleep: []time.Duration{200 * time.Millisecond, 400 * time.Millisecond}},
		{name: "post with key dropped connection retried", call: post, key: "k-1", statuses: []int{-1}, wantOK: true, wantReqs: 2,
			wantSleep: []time.Duration{200 * time.Millisecond}},
		{name: "post without key 503 not retried", call: post, statuses: []int{503}, wantKind: KindTransient, wantReqs: 1},
		{name: "post without key 429 not retried", call: post, statuses: []int{429}, wantKind: KindTransient, wantReqs: 1},
		{name: "post without key dropped connection not retried", call: post, statuses: []int{-1}, wantKind: KindTransient, wantReqs: 1},
		{name: "post 409 conflict", call: post, key: "k-1", statuses: []int{409}, wantKind: KindConflict, wantReqs: 1},
		{name: "post 422 invalid", call: post, key: "k-1", statuses: []int{422}, wantKind: KindInvalid, wantReqs: 1},
		{name: "post 413 too large", call: post, key: "k-1", statuses: []int{413}, wantKind: KindTooLarge, wantReqs: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &script{statuses: tc.statuses, header: tc.header, ok: `{"appointmentId":"A1","reportGuid":"g"}`}
			f := newFixture(t, s.ServeHTTP, noKeepAlive)
			err := tc.call(f.c, tc.key)
			if tc.wantOK {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				var e *Error
				require.ErrorAs(t, err, &e)
				assert.Equal(t, tc.wantKind, e.Kind, "%v", err)
				if tc.statuses[0] != -1 {
					assert.NotZero(t, e.Status)
				}
			}
			assert.Equal(t, tc.wantReqs, s.n(), "requests")
			assert.Equal(t, tc.wantSleep, f.sleeps.got(), "sleeps")
			if tc.key != "" {
				for i, r := range s.reqs {
					assert.Equal(t, tc.key, r.Header.Get("Idempotency-Key"), "request %d", i)
					assert.Equal(t, s.bodies[0], s.bodies[i], "request %d body", i)
				}
			}
		})
	}
}

func TestRetryAfterHTTPDate(t *testing.T) {
	now := time.Date(2025, 1, 10, 3, 0, 0, 0, time.UTC)
	s := &script{statuses: []int{429}, header: map[string]string{"Retry-After": now.Add(42 * time.Second).Format(http.TimeFormat)}, ok: `{}`}
	f := newFixture(t, s.ServeHTTP)
	f.c.now = func() time.Time { return now }
	_, err := f.c.GetPending(context.Background(), "acme", "A1")
	require.NoError(t, err)
	assert.Equal(t, []time.Duration{42 * time.Second}, f.sleeps.got())
}

func TestRetryStoppedByContext(t *testing.T) {
	t.Run("cancelled while waiting", func(t *testing.T) {
		s := &script{statuses: []int{503, 503, 503}, ok: `{}`}
		f := newFixture(t, s.ServeHTTP)
		ctx, cancel := context.WithCancel(context.Background())
		f.c.sleep = func(ctx context.Context, d time.Duration) error {
			cancel()
			return sleepCtx(ctx, d)
		}
		_, err := f.c.GetPending(ctx, "acme", "A1")
		var e *Error
		require.ErrorAs(t, err, &e)
		assert.Equal(t, KindTransient, e.Kind)
		assert.Equal(t, 503, e.Status)
		assert.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, 1, s.n())
	})
	t.Run("deadline before the next attempt", func(t *testing.T) {
		s := &script{statuses: []int{429}, header: map[string]string{"Retry-After": "30"}, ok: `{}`}
		f := newFixture(t, s.ServeHTTP)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := f.c.GetPending(ctx, "acme", "A1")
		var e *Error
		require.ErrorAs(t, err, &e)
		assert.Equal(t, KindTransient, e.Kind)
		assert.Equal(t, 429, e.Status)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Empty(t, f.sleeps.got(), "no pointless wait")
	})
	t.Run("real sleep honours cancellation", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		assert.ErrorIs(t, sleepCtx(ctx, time.Hour), context.Canceled)
	})
}

func TestProblemDecoding(t *testing.T) {
	cases := []struct {
		name        string
		contentType string
		body        string
		want        *Problem
	}{
		{"problem", "application/problem+json",
			`{"type":"https://x/t","title":"Not Found","status":404,"detail":"d","instance":"/i","requestId":"r-1","extra":{"a":1}}`,
			&Problem{Type: "https://x/t", Title: "Not Found", Status: 404, Detail: "d", Instance: "/i", RequestID: "r-1"}},
		{"wrong member types dropped", "application/problem+json", `{"title":7,"status":"404","requestId":"r"}`,
			&Problem{RequestID: "r"}},
		{"html", "text/html", `<html><body>Bad gateway</body></html>`, nil},
		{"truncated", "application/problem+json", `{"title":"Not Fo`, nil},
		{"empty object", "application/json", `{}`, nil},
		{"array", "application/json", `[1,2]`, nil},
		{"empty", "", ``, nil},
		{"huge", "application/problem+json", `{"title":"T","detail":"` + strings.Repeat("x", 1<<20) + `"}`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				w.Header().Set("X-Correlation-Id", "corr-back")
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, tc.body)
			})
			_, err := f.c.GetPending(WithCorrelationID(context.Background(), "corr-sent"), "acme", "A1")
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, KindNotFound, e.Kind)
			assert.Equal(t, 404, e.Status)
			assert.Equal(t, "qubs.GetPending", e.Op)
			assert.Equal(t, tc.want, e.Problem)
			assert.Equal(t, "corr-back", e.CorrelationID)
			if tc.want != nil {
				assert.Equal(t, tc.want.RequestID, e.RequestID)
			}
			assert.NotContains(t, err.Error(), "xxxx")
			assert.True(t, errors.Is(err, ErrNotFound))
		})
	}
}

func TestErrorMessageHoldsNoPHI(t *testing.T) {
	s := &script{statuses: []int{422}}
	f := newFixture(t, s.ServeHTTP)
	_, err := f.c.SubmitReport(context.Background(), "acme", "A1", ReportSubmission{ReportText: "Jane Doe has a tumour", ReportStatus: "final"}, "")
	require.Error(t, err)
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, "patient Jane Doe", e.Problem.Detail, "the detail is kept for the caller")
	assert.NotContains(t, err.Error(), "Jane")
	assert.NotContains(t, err.Error(), "tumour")
	assert.Contains(t, err.Error(), "req-422")
}

func TestCorrelationID(t *testing.T) {
	cases := []struct {
		name, ctxID, wantSent string
	}{
		{"sent", "corr-123", "corr-123"},
		{"none", "", ""},
		{"unsendable dropped", "bad\r\nid", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &script{statuses: []int{409}}
			f := newFixture(t, s.ServeHTTP)
			ctx := context.Background()
			if tc.ctxID != "" {
				ctx = WithCorrelationID(ctx, tc.ctxID)
			}
			_, err := f.c.CreateComment(ctx, "acme", "A1", NewComment{CommentText: "hi"}, "k")
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, KindConflict, e.Kind)
			assert.Equal(t, tc.wantSent, s.reqs[0].Header.Get("X-Correlation-Id"))
			assert.Equal(t, "echoed-corr", e.CorrelationID, "the echoed id wins")
		})
	}
	t.Run("sent id kept when none echoed", func(t *testing.T) {
		f := newFixture(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) },
			func(c *Config) { c.Retry.MaxAttempts = 1 })
		_, err := f.c.GetPending(WithCorrelationID(context.Background(), "mine"), "acme", "A1")
		var e *Error
		require.ErrorAs(t, err, &e)
		assert.Equal(t, "mine", e.CorrelationID)
		assert.Nil(t, e.Problem)
	})
}

func TestTokenSharedByConcurrentCalls(t *testing.T) {
	s := &script{ok: `{}`}
	f := newFixture(t, s.ServeHTTP)
	hold := make(chan struct{})
	f.tokens.hold.Store(&hold)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := f.c.GetPending(context.Background(), "acme", "A1")
			errs <- err
		})
	}
	// Hold the token answer until one fetch is under way, so that the
	// callers pile up behind it.
	waitClosed(t, f.tokens.entered, "a token request")
	close(hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, int32(1), f.tokens.count.Load(), "one token fetch for all callers")
	assert.Equal(t, n, s.n())
	for _, r := range s.reqs {
		assert.Equal(t, "Bearer tok-1", r.Header.Get("Authorization"))
	}
}

func TestTokenWaitAbandonedByContext(t *testing.T) {
	s := &script{ok: `{}`}
	f := newFixture(t, s.ServeHTTP)
	hold := make(chan struct{})
	f.tokens.hold.Store(&hold)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.c.Token(ctx) }()
	waitClosed(t, f.tokens.entered, "a token request")
	cancel()
	err := <-done
	assert.Equal(t, KindTransient, KindOf(err))
	assert.ErrorIs(t, err, context.Canceled)
	close(hold)
	// The shared fetch was not cancelled with the caller: the next caller
	// gets its token without a second fetch.
	require.NoError(t, f.c.Token(context.Background()))
	assert.Equal(t, int32(1), f.tokens.count.Load())
}

// authAPI accepts only the listed bearer tokens.
func authAPI(valid ...string) (*script, http.HandlerFunc) {
	s := &script{ok: `{}`}
	return s, func(w http.ResponseWriter, r *http.Request) {
		for _, v := range valid {
			if r.Header.Get("Authorization") == "Bearer "+v {
				s.ServeHTTP(w, r)
				return
			}
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, r)
		s.mu.Unlock()
		problem(w, http.StatusUnauthorized, "Unauthorized")
	}
}

func TestTokenRenewalOn401(t *testing.T) {
	t.Run("renewed once then ok", func(t *testing.T) {
		s, h := authAPI("tok-2")
		f := newFixture(t, h)
		_, err := f.c.CreateComment(context.Background(), "acme", "A1", NewComment{CommentText: "x"}, "")
		require.NoError(t, err, "a 401 is retried even without an idempotency key")
		assert.Equal(t, int32(2), f.tokens.count.Load())
		assert.Equal(t, 2, s.n())
		assert.Empty(t, f.sleeps.got(), "no backoff for a renewal")
	})
	t.Run("401 again is unauthorized", func(t *testing.T) {
		s, h := authAPI()
		f := newFixture(t, h)
		_, err := f.c.GetPending(context.Background(), "acme", "A1")
		var e *Error
		require.ErrorAs(t, err, &e)
		assert.Equal(t, KindUnauthorized, e.Kind)
		assert.Equal(t, 401, e.Status)
		assert.Equal(t, int32(2), f.tokens.count.Load())
		assert.Equal(t, 2, s.n())
	})
	t.Run("concurrent 401s renew once", func(t *testing.T) {
		s, h := authAPI("tok-2")
		f := newFixture(t, h)
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				_, err := f.c.GetPending(context.Background(), "acme", "A1")
				assert.NoError(t, err)
			})
		}
		wg.Wait()
		// Every caller may have used tok-1 and seen a 401, but only the
		// 401s of the current token drop it.
		assert.Equal(t, int32(2), f.tokens.count.Load())
		assert.GreaterOrEqual(t, s.n(), 11)
	})
}

func TestTokenRenewedBeforeExpiry(t *testing.T) {
	s, h := authAPI("tok-1", "tok-2")
	f := newFixture(t, h)
	var offset atomic.Int64
	f.c.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	require.NoError(t, f.c.Token(context.Background()))
	_, err := f.c.GetPending(context.Background(), "acme", "A1")
	require.NoError(t, err)
	assert.Equal(t, int32(1), f.tokens.count.Load(), "reused")
	// Within the expiry delta of the 60-minute token: renewed before use,
	// without a 401 from the API.
	offset.Store(int64(60*time.Minute - tokenExpiryDelta + time.Second))
	_, err = f.c.GetPending(context.Background(), "acme", "A1")
	require.NoError(t, err)
	assert.Equal(t, int32(2), f.tokens.count.Load())
	assert.Equal(t, "Bearer tok-2", s.reqs[len(s.reqs)-1].Header.Get("Authorization"))
	for _, r := range s.reqs {
		assert.NotEqual(t, "", r.Header.Get("Authorization"))
	}
	assert.Equal(t, 2, s.n(), "no 401 on the way")
}

func TestTokenAuthStyles(t *testing.T) {
	cases := []struct {
		name  string
		style oauth2.AuthStyle
		want  []string
	}{
		{"form body", oauth2.AuthStyleInParams, []string{"post"}},
		{"basic", oauth2.AuthStyleInHeader, []string{"basic"}},
		{"auto-detect tries basic first", oauth2.AuthStyleAutoDetect, []string{"basic"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, (&script{}).ServeHTTP, func(c *Config) { c.AuthStyle = tc.style })
			require.NoError(t, f.c.Token(context.Background()))
			assert.Equal(t, tc.want, f.tokens.authMethods())
		})
	}
}

func TestTokenEndpointFailures(t *testing.T) {
	cases := []struct {
		name       string
		status     int
		code       string
		wrongCreds bool
		want       Kind
	}{
		{"wrong secret", 0, "", true, KindUnauthorized},
		{"400 invalid_client", 400, "invalid_client", false, KindUnauthorized},
		{"401 invalid_client", 401, "invalid_client", false, KindUnauthorized},
		{"400 unauthorized_client", 400, "unauthorized_client", false, KindUnauthorized},
		{"503", 503, "", false, KindTransient},
		{"500", 500, "server_error", false, KindTransient},
		{"429", 429, "", false, KindTransient},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, (&script{}).ServeHTTP, func(c *Config) {
				if tc.wrongCreds {
					c.ClientSecret = "wrong"
				}
			})
			f.tokens.failStatus.Store(int32(tc.status))
			f.tokens.failCode.Store(tc.code)
			err := f.c.Token(context.Background())
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, tc.want, e.Kind)
			assert.Equal(t, "qubs.Token", e.Op)
			assert.NotContains(t, err.Error(), testClientSecret)
			assert.NotContains(t, err.Error(), "wrong")
		})
	}
	t.Run("token endpoint unreachable", func(t *testing.T) {
		f := newFixture(t, (&script{}).ServeHTTP)
		f.tokens.Close()
		err := f.c.Token(context.Background())
		assert.Equal(t, KindTransient, KindOf(err))
	})
	t.Run("transient token failure retried within a call", func(t *testing.T) {
		s := &script{ok: `{}`}
		f := newFixture(t, s.ServeHTTP)
		f.tokens.failStatus.Store(503)
		f.tokens.failTimes.Store(2)
		_, err := f.c.CreateComment(context.Background(), "acme", "A1", NewComment{CommentText: "x"}, "")
		require.NoError(t, err)
		assert.Equal(t, int32(3), f.tokens.count.Load())
		assert.Equal(t, 1, s.n())
		assert.Len(t, f.sleeps.got(), 2)
	})
	t.Run("refused credentials not retried", func(t *testing.T) {
		s := &script{ok: `{}`}
		f := newFixture(t, s.ServeHTTP, func(c *Config) { c.ClientSecret = "wrong" })
		_, err := f.c.GetPending(context.Background(), "acme", "A1")
		assert.Equal(t, KindUnauthorized, KindOf(err))
		assert.Equal(t, int32(1), f.tokens.count.Load())
		assert.Equal(t, 0, s.n())
	})
}

// page serves canned pages by nextToken ("" = first page).
func pageServer(t *testing.T, pages map[string]string) (*script, http.HandlerFunc) {
	s := &script{}
	return s, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.reqs = append(s.reqs, r)
		s.mu.Unlock()
		assert.True(t, strings.HasSuffix(r.URL.Path, "/integrations/v1/acme/reporting/appointments/pending"), r.URL.Path)
		body, ok := pages[r.URL.Query().Get("nextToken")]
		if !ok {
			problem(w, http.StatusBadRequest, "bad token")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}
}

func TestPaging(t *testing.T) {
	item := func(id string) string {
		return `{"domain":"acme","appointmentId":"` + id + `","status":"PENDING REPORTING"}`
	}
	cases := []struct {
		name string
		last string
	}{
		{"null nextToken", `{"items":[` + item("C") + `],"nextToken":null}`},
		{"empty nextToken", `{"items":[` + item("C") + `],"nextToken":""}`},
		{"omitted nextToken", `{"items":[` + item("C") + `]}`},
		{"unknown fields tolerated", `{"items":[` + item("C") + `],"count":1,"future":{"x":[1]}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, h := pageServer(t, map[string]string{
				"":        `{"items":[` + item("A") + `,` + item("B") + `],"nextToken":"t/1+="}`,
				"t/1+=":   `{"items":[],"nextToken":"tok2"}`, // an empty page is not the end
				"tok2":    tc.last,
				"unknown": emptyPage,
			})
			f := newFixture(t, h)
			var ids []string
			for a, err := range f.c.Pending(context.Background(), "acme", 2) {
				require.NoError(t, err)
				ids = append(ids, a.AppointmentID)
			}
			assert.Equal(t, []string{"A", "B", "C"}, ids)
			require.Equal(t, 3, s.n())
			assert.Equal(t, "2", s.reqs[0].URL.Query().Get("pageSize"))
			assert.False(t, s.reqs[0].URL.Query().Has("nextToken"))
			assert.Equal(t, "t/1+=", s.reqs[1].URL.Query().Get("nextToken"), "token escaped and round-tripped")
		})
	}
	t.Run("pageSize 0 is omitted", func(t *testing.T) {
		s, h := pageServer(t, map[string]string{"": emptyPage})
		f := newFixture(t, h)
		p, err := f.c.ListPending(context.Background(), "acme", 0, "")
		require.NoError(t, err)
		assert.False(t, p.More())
		assert.Empty(t, s.reqs[0].URL.RawQuery)
	})
	t.Run("repeated token stops the walk", func(t *testing.T) {
		s, h := pageServer(t, map[string]string{"": `{"items":[],"nextToken":"a"}`, "a": `{"items":[],"nextToken":"a"}`})
		f := newFixture(t, h)
		var errs []error
		for p, err := range f.c.Pages(context.Background(), "acme", 10) {
			if err != nil {
				errs = append(errs, err)
				assert.Nil(t, p)
			}
		}
		require.Len(t, errs, 1)
		assert.Equal(t, KindInternal, KindOf(errs[0]))
		assert.Equal(t, 2, s.n())
	})
	t.Run("break stops fetching", func(t *testing.T) {
		s, h := pageServer(t, map[string]string{"": `{"items":[` + item("A") + `,` + item("B") + `],"nextToken":"x"}`})
		f := newFixture(t, h)
		for range f.c.Pending(context.Background(), "acme", 2) {
			break
		}
		assert.Equal(t, 1, s.n())
	})
	t.Run("error ends the walk", func(t *testing.T) {
		s, h := pageServer(t, map[string]string{"": `{"items":[` + item("A") + `],"nextToken":"gone"}`})
		f := newFixture(t, h)
		var got []string
		var errs []error
		for a, err := range f.c.Pending(context.Background(), "acme", 1) {
			if err != nil {
				errs = append(errs, err)
				continue
			}
			got = append(got, a.AppointmentID)
		}
		assert.Equal(t, []string{"A"}, got)
		require.Len(t, errs, 1)
		assert.Equal(t, KindInvalid, KindOf(errs[0]))
		assert.Equal(t, 2, s.n())
	})
	for _, n := range []int{-1, 501, 1000} {
		t.Run(fmt.Sprintf("pageSize %d refused before any request", n), func(t *testing.T) {
			s, h := pageServer(t, map[string]string{"": emptyPage})
			f := newFixture(t, h)
			_, err := f.c.ListPending(context.Background(), "acme", n, "")
			assert.Equal(t, KindInvalid, KindOf(err))
			var errs []error
			for _, err := range f.c.Pending(context.Background(), "acme", n) {
				errs = append(errs, err)
			}
			require.Len(t, errs, 1)
			assert.Equal(t, KindInvalid, KindOf(errs[0]))
			assert.Equal(t, 0, s.n())
			assert.Equal(t, int32(0), f.tokens.count.Load())
		})
	}
}

func TestValidatePageSize(t *testing.T) {
	for n, ok := range map[int]bool{0: true, 1: true, 100: true, 500: true, -1: false, 501: false} {
		err := ValidatePageSize(n)
		assert.Equal(t, ok, err == nil, "%d", n)
		if !ok {
			assert.Equal(t, KindInvalid, KindOf(err))
		}
	}
}

func TestValidateIdempotencyKey(t *testing.T) {
	cases := []struct {
		name string
		key  string
		ok   bool
	}{
		{"uuid", "cd4a859c-7a1f-4b44-b765-a8fe17bb44c1", true},
		{"printable punctuation", "a!~{}", true},
		{"128 chars", strings.Repeat("k", 128), true},
		{"empty", "", false},
		{"129 chars", strings.Repeat("k", 129), false},
		{"space", "a b", false},
		{"tab", "a\tb", false},
		{"newline", "a\nb", false},
		{"del", "a\x7f", false},
		{"non-ascii", "clé", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateIdempotencyKey(tc.key)
			if tc.ok {
				assert.NoError(t, err)
				return
			}
			assert.Equal(t, KindInvalid, KindOf(err))
		})
	}
	t.Run("invalid key refused before sending", func(t *testing.T) {
		s := &script{}
		f := newFixture(t, s.ServeHTTP)
		_, err := f.c.SubmitReport(context.Background(), "acme", "A1", ReportSubmission{ReportText: "x", ReportStatus: "final"}, "bad key")
		assert.Equal(t, KindInvalid, KindOf(err))
		_, err = f.c.CreateComment(context.Background(), "acme", "A1", NewComment{CommentText: "x"}, strings.Repeat("k", 129))
		assert.Equal(t, KindInvalid, KindOf(err))
		_, err = f.c.CreateUploadURLs(context.Background(), "acme", "A1", UploadRequest{Items: []UploadItem{{FileName: "r.pdf"}}}, "ü")
		assert.Equal(t, KindInvalid, KindOf(err))
		assert.Equal(t, 0, s.n())
	})
}

func TestDeriveIdempotencyKey(t *testing.T) {
	k := DeriveIdempotencyKey("report", []byte("acme"), []byte("A1"))
	assert.Equal(t, k, DeriveIdempotencyKey("report", []byte("acme"), []byte("A1")), "stable")
	assert.True(t, strings.HasPrefix(k, "report-"))
	assert.Len(t, k, len("report-")+64)
	assert.NotEqual(t, k, DeriveIdempotencyKey("report", []byte("acm"), []byte("eA1")), "parts are length-prefixed")
	assert.NotEqual(t, k, DeriveIdempotencyKey("comment", []byte("acme"), []byte("A1")))
	assert.NotEqual(t, DeriveIdempotencyKey("a b"), DeriveIdempotencyKey("a_b"), "cleaned scopes still differ")
	long := strings.Repeat("s", 300)
	assert.NotEqual(t, DeriveIdempotencyKey(long), DeriveIdempotencyKey(long+"x"), "cut scopes still differ")
	for _, scope := range []string{"", "report", "a b\nc", "clé", long} {
		key := DeriveIdempotencyKey(scope, []byte("x"))
		assert.NoError(t, ValidateIdempotencyKey(key), "%q", scope)
		assert.LessOrEqual(t, len(key), MaxIdempotencyKeyLength)
	}
}

func TestRequestValidation(t *testing.T) {
	s := &script{}
	f := newFixture(t, s.ServeHTTP)
	ctx := context.Background()
	bad := CommentType("XX")
	cases := []struct {
		name string
		call func() error
		want Kind
	}{
		{"empty domain", func() error { _, err := f.c.GetPending(ctx, "", "A1"); return err }, KindInvalid},
		{"empty id", func() error { _, err := f.c.GetPending(ctx, "acme", ""); return err }, KindInvalid},
		{"dot-dot id", func() error { _, err := f.c.ListComments(ctx, "acme", ".."); return err }, KindNotFound},
		{"dot id", func() error { _, err := f.c.GetPending(ctx, "acme", "."); return err }, KindNotFound},
		{"dot comment guid", func() error { _, err := f.c.GetComment(ctx, "acme", "A1", "."); return err }, KindNotFound},
		{"id pending", func() error { _, err := f.c.GetPending(ctx, "acme", "pending"); return err }, KindNotFound},
		{"empty attachment guid", func() error { _, err := f.c.GetAttachment(ctx, "acme", "A1", "", AttachmentOptions{}); return err }, KindInvalid},
		{"empty comment guid", func() error { _, err := f.c.GetComment(ctx, "acme", "A1", ""); return err }, KindInvalid},
		{"bad disposition", func() error {
			_, err := f.c.ListAttachments(ctx, "acme", "A1", AttachmentOptions{Disposition: "download"})
			return err
		}, KindInvalid},
		{"negative ttl", func() error {
			_, err := f.c.ListAttachments(ctx, "acme", "A1", AttachmentOptions{URLTTLSeconds: -1})
			return err
		}, KindInvalid},
		{"blank comment", func() error {
			_, err := f.c.CreateComment(ctx, "acme", "A1", NewComment{CommentText: " \n"}, "")
			return err
		}, KindInvalid},
		{"bad comment type", func() error {
			_, err := f.c.CreateComment(ctx, "acme", "A1", NewComment{CommentText: "x", CommentType: &bad}, "")
			return err
		}, KindInvalid},
		{"empty report", func() error {
			_, err := f.c.SubmitReport(ctx, "acme", "A1", ReportSubmission{ReportStatus: "final"}, "")
			return err
		}, KindInvalid},
		{"report too large", func() error {
			_, err := f.c.SubmitReport(ctx, "acme", "A1", ReportSubmission{ReportText: strings.Repeat("x", MaxReportTextBytes+1), ReportStatus: "final"}, "")
			return err
		}, KindTooLarge},
		{"bad report status", func() error {
			_, err := f.c.SubmitReport(ctx, "acme", "A1", ReportSubmission{ReportText: "x", ReportStatus: "draft"}, "")
			return err
		}, KindInvalid},
		{"no upload items", func() error { _, err := f.c.CreateUploadURLs(ctx, "acme", "A1", UploadRequest{}, ""); return err }, KindInvalid},
		{"21 upload items", func() error {
			_, err := f.c.CreateUploadURLs(ctx, "acme", "A1", UploadRequest{Items: make([]UploadItem, 21)}, "")
			return err
		}, KindInvalid},
		{"bad upload content type", func() error {
			ct := "image/png"
			_, err := f.c.CreateUploadURLs(ctx, "acme", "A1", UploadRequest{Items: []UploadItem{{FileName: "a.png", ContentType: &ct}}}, "")
			return err
		}, KindInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, tc.want, e.Kind, "%v", err)
			assert.True(t, strings.HasPrefix(e.Op, "qubs."), e.Op)
		})
	}
	assert.Equal(t, 0, s.n(), "nothing was sent")
	assert.Equal(t, int32(0), f.tokens.count.Load())
}

func TestRequestShape(t *testing.T) {
	s := &script{ok: `{"guid":"g"}`, okStatus: http.StatusCreated}
	f := newFixture(t, s.ServeHTTP, func(c *Config) {
		c.BaseURL += "/integrations/v1/" // tolerated
		c.UserAgent = "ua/1"
	})
	ctx := WithCorrelationID(context.Background(), "c-1")
	_, err := f.c.GetAttachment(ctx, "ac me", "A/1?x", "g#1", AttachmentOptions{URLTTLSeconds: 120, Disposition: DispositionAttachment})
	require.NoError(t, err)
	_, err = f.c.CreateUploadURLs(ctx, "acme", "A1", UploadRequest{Items: []UploadItem{{FileName: "r.pdf"}}}, "key-1")
	require.NoError(t, err)
	_, err = f.c.ListComments(ctx, "acme", "A1")
	require.Error(t, err, `{"guid":"g"} is not an array`)
	assert.Equal(t, KindInternal, KindOf(err))

	r := s.reqs[0]
	assert.Equal(t, "/integrations/v1/ac%20me/reporting/appointments/A%2F1%3Fx/attachments/g%231", r.URL.EscapedPath())
	assert.Equal(t, "120", r.URL.Query().Get("urlTtlSeconds"))
	assert.Equal(t, "attachment", r.URL.Query().Get("disposition"))
	assert.Equal(t, "ua/1", r.Header.Get("User-Agent"))
	assert.Equal(t, "c-1", r.Header.Get("X-Correlation-Id"))
	assert.Equal(t, "Bearer tok-1", r.Header.Get("Authorization"))
	assert.Empty(t, r.Header.Get("Idempotency-Key"))

	r = s.reqs[1]
	assert.Equal(t, http.MethodPost, r.Method)
	assert.Equal(t, "/integrations/v1/acme/reporting/appointments/A1/report/attachments", r.URL.Path)
	assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
	assert.Equal(t, "key-1", r.Header.Get("Idempotency-Key"))
	assert.JSONEq(t, `{"items":[{"fileName":"r.pdf"}]}`, s.bodies[1])
	assert.Equal(t, "/integrations/v1/acme/reporting/appointments/A1/comments", s.reqs[2].URL.Path)
}

func TestResponseLimits(t *testing.T) {
	f := newFixture(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"items":[],"pad":"`)
		chunk := strings.Repeat("x", 1<<20)
		for range maxResponseBody>>20 + 1 {
			io.WriteString(w, chunk)
		}
		io.WriteString(w, `"}`)
	})
	_, err := f.c.ListPending(context.Background(), "acme", 0, "")
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, KindInternal, e.Kind)
	assert.Equal(t, 200, e.Status)
}

func TestNewValidation(t *testing.T) {
	ok := Config{BaseURL: "https://partners.qubs.io", TokenURL: "https://authenticate.qubs.io/oauth2/token", ClientID: "id", ClientSecret: "s"}
	cases := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"ok", func(*Config) {}, true},
		{"no base", func(c *Config) { c.BaseURL = "" }, false},
		{"relative base", func(c *Config) { c.BaseURL = "/api" }, false},
		{"ftp base", func(c *Config) { c.BaseURL = "ftp://x" }, false},
		{"base with query", func(c *Config) { c.BaseURL = "https://x/?a=1" }, false},
		{"no token url", func(c *Config) { c.TokenURL = "" }, false},
		{"no client id", func(c *Config) { c.ClientID = "" }, false},
		{"bad auth style", func(c *Config) { c.AuthStyle = 9 }, false},
		{"negative retry", func(c *Config) { c.Retry.MaxAttempts = -1 }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			c, err := New(cfg)
			if tc.ok {
				require.NoError(t, err)
				assert.Equal(t, RetryPolicy{MaxAttempts: 5, BaseDelay: 200 * time.Millisecond, MaxDelay: 10 * time.Second, MaxRetryAfter: time.Minute}, c.retry)
				return
			}
			assert.Equal(t, KindInvalid, KindOf(err))
			assert.NotContains(t, err.Error(), "s3cret")
		})
	}
}

// store is a presigned-URL object store: it records requests and answers
// PUT and GET.
type store struct {
	mu      sync.Mutex
	reqs    []*http.Request
	bodies  [][]byte
	status  []int // statuses to answer in turn before succeeding
	content []byte
}

func (s *store) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, r)
	s.bodies = append(s.bodies, b)
	st := 0
	if len(s.status) > 0 {
		st, s.status = s.status[0], s.status[1:]
	}
	s.mu.Unlock()
	if st != 0 {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(st)
		code := "InternalError"
		if st == 403 {
			code = "AccessDenied"
		}
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>Request has expired for Jane</Message></Error>`, code)
		return
	}
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if r.Method == http.MethodGet {
		w.Header().Set("Content-Type", "application/pdf")
		w.Header().Set("Content-Disposition", `attachment; filename="r.pdf"`)
		w.Write(s.content)
	}
}

func (s *store) n() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

func newStoreFixture(t *testing.T, st *store) (*fixture, string) {
	t.Helper()
	f := newFixture(t, (&script{}).ServeHTTP)
	srv := httptest.NewServer(st)
	t.Cleanup(srv.Close)
	return f, srv.URL + "/presigned/upload/tok?X-Amz-Signature=secret"
}

func TestUpload(t *testing.T) {
	ctx := context.Background()
	future := time.Now().Add(time.Hour)
	past := time.Now().Add(-time.Second)
	content := []byte("%PDF-1.7 content")
	cases := []struct {
		name     string
		size     int64
		body     io.Reader
		expires  *time.Time
		status   []int
		want     Kind // KindInternal = success
		wantReqs int
	}{
		{"ok", int64(len(content)), strings.NewReader(string(content)), &future, nil, KindInternal, 1},
		{"ok without expiry", int64(len(content)), strings.NewReader(string(content)), nil, nil, KindInternal, 1},
		{"too large", MaxUploadBytes + 1, strings.NewReader("x"), &future, nil, KindTooLarge, 0},
		{"expired by the clock", int64(len(content)), strings.NewReader(string(content)), &past, nil, KindExpired, 0},
		{"store says 403", int64(len(content)), strings.NewReader(string(content)), &future, []int{403}, KindExpired, 1},
		{"store 503 not retried", int64(len(content)), strings.NewReader(string(content)), &future, []int{503}, KindTransient, 1},
		{"body shorter than size", int64(len(content)) + 5, strings.NewReader(string(content)), &future, nil, KindInvalid, -1},
		{"body longer than size", int64(len(content)) - 1, strings.NewReader(string(content)), &future, nil, KindInvalid, -1},
		{"negative size", -1, strings.NewReader(""), &future, nil, KindInvalid, 0},
		{"empty upload", 0, strings.NewReader(""), &future, nil, KindInternal, 1},
		{"empty size with bytes", 0, strings.NewReader("x"), &future, nil, KindInvalid, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := &store{status: tc.status}
			f, u := newStoreFixture(t, st)
			err := f.c.Upload(ctx, UploadURL{GUID: "g", UploadURL: u, UploadURLExpiresAtUTC: tc.expires}, ContentTypePDF, tc.size, tc.body)
			if tc.want == KindInternal {
				require.NoError(t, err)
				r := st.reqs[0]
				assert.Equal(t, http.MethodPut, r.Method)
				assert.Equal(t, tc.size, r.ContentLength)
				assert.Equal(t, ContentTypePDF, r.Header.Get("Content-Type"))
				assert.Empty(t, r.Header.Get("Authorization"), "no bearer token to the store")
				assert.Empty(t, r.TransferEncoding)
				if tc.size > 0 {
					assert.Equal(t, content, st.bodies[0])
				}
			} else {
				var e *Error
				require.ErrorAs(t, err, &e)
				assert.Equal(t, tc.want, e.Kind, "%v", err)
				assert.Equal(t, "qubs.Upload", e.Op)
				assert.NotContains(t, err.Error(), "secret", "the presigned URL is a credential")
				assert.NotContains(t, err.Error(), "Jane", "the store's message is not kept")
			}
			if tc.wantReqs >= 0 {
				assert.Equal(t, tc.wantReqs, st.n())
			}
			assert.Equal(t, int32(0), f.tokens.count.Load(), "no token needed")
		})
	}
}

// TestUploadStreams shows the body is streamed: the store receives the
// first half before the second half exists.
func TestUploadStreams(t *testing.T) {
	half := strings.Repeat("a", 64<<10)
	gotFirst := make(chan struct{})
	received := make(chan []byte, 1)
	f := newFixture(t, (&script{}).ServeHTTP)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, len(half))
		_, err := io.ReadFull(r.Body, buf)
		assert.NoError(t, err)
		close(gotFirst)
		rest, _ := io.ReadAll(r.Body)
		received <- append(buf, rest...)
	}))
	t.Cleanup(srv.Close)
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, half)
		select {
		case <-gotFirst:
			_, _ = io.WriteString(pw, half)
			_ = pw.Close()
		case <-time.After(10 * time.Second):
			_ = pw.CloseWithError(errors.New("the first half never reached the store: the body was buffered"))
		}
	}()
	err := f.c.Upload(context.Background(), UploadURL{UploadURL: srv.URL + "/u"}, "", int64(2*len(half)), pr)
	require.NoError(t, err)
	assert.Equal(t, half+half, string(<-received))
}

func TestDownload(t *testing.T) {
	content := []byte("%PDF-1.7 referral")
	t.Run("streams bytes and headers", func(t *testing.T) {
		st := &store{content: content}
		f, u := newStoreFixture(t, st)
		d, err := f.c.Download(context.Background(), u)
		require.NoError(t, err)
		defer d.Body.Close()
		b, err := io.ReadAll(d.Body)
		require.NoError(t, err)
		assert.Equal(t, content, b)
		assert.Equal(t, "application/pdf", d.ContentType)
		assert.Equal(t, int64(len(content)), d.ContentLength)
		assert.Equal(t, `attachment; filename="r.pdf"`, d.ContentDisposition)
		assert.Empty(t, st.reqs[0].Header.Get("Authorization"))
		assert.Equal(t, int32(0), f.tokens.count.Load())
	})
	t.Run("5xx retried", func(t *testing.T) {
		st := &store{content: content, status: []int{500, 503}}
		f, u := newStoreFixture(t, st)
		d, err := f.c.Download(context.Background(), u)
		require.NoError(t, err)
		d.Body.Close()
		assert.Equal(t, 3, st.n())
	})
	t.Run("403 is expired", func(t *testing.T) {
		st := &store{status: []int{403}}
		f, u := newStoreFixture(t, st)
		_, err := f.c.Download(context.Background(), u)
		var e *Error
		require.ErrorAs(t, err, &e)
		assert.Equal(t, KindExpired, e.Kind)
		assert.Equal(t, 403, e.Status)
		assert.Contains(t, err.Error(), "AccessDenied")
		assert.NotContains(t, err.Error(), "secret")
		assert.Equal(t, 1, st.n())
	})
	t.Run("bad url", func(t *testing.T) {
		f := newFixture(t, (&script{}).ServeHTTP)
		_, err := f.c.Download(context.Background(), "not a url")
		assert.Equal(t, KindInvalid, KindOf(err))
	})
}

// TestTokenNeverInErrors checks that no error text carries the bearer
// token or the client secret, whatever went wrong.
func TestTokenNeverInErrors(t *testing.T) {
	s, h := authAPI()
	f := newFixture(t, h)
	_, err := f.c.GetPending(context.Background(), "acme", "A1")
	require.Error(t, err)
	for _, secret := range []string{"tok-1", "tok-2", testClientSecret, base64.StdEncoding.EncodeToString([]byte(testClientID + ":" + testClientSecret))} {
		assert.NotContains(t, err.Error(), secret)
		assert.NotContains(t, fmt.Sprintf("%+v", err), secret)
	}
	assert.Equal(t, 2, s.n())
}

func TestWrapKeepsKind(t *testing.T) {
	err := error(&Error{Kind: KindConflict})
	wrap(&err, "qubs.X")
	assert.Equal(t, KindConflict, KindOf(err))
	assert.Equal(t, "qubs.X", err.(*Error).Op)
	err = errors.New("plain")
	wrap(&err, "qubs.Y")
	assert.Equal(t, KindInternal, KindOf(err))
	var nilErr error
	wrap(&nilErr, "qubs.Z")
	assert.NoError(t, nilErr)
}
