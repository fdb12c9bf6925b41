package qubs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Config configures a Client.
type Config struct {
	// BaseURL is the API origin, e.g. https://partners.qubs.io, without the
	// /integrations/v1 prefix (a trailing one is tolerated and dropped).
	BaseURL string
	// TokenURL is the OAuth2 token endpoint, e.g.
	// https://authenticate.qubs.io/oauth2/token.
	TokenURL string
	// ClientID and ClientSecret are the client credentials QUBS
	// provisioned; the secret is never logged or put in an error.
	ClientID     string
	ClientSecret string
	// AuthStyle is how the client authenticates to the token endpoint:
	// oauth2.AuthStyleInParams (form body, as the QUBS examples do),
	// oauth2.AuthStyleInHeader (HTTP Basic) or 0 to auto-detect (Basic
	// first, then the form body; the style that worked is remembered).
	AuthStyle oauth2.AuthStyle
	// HTTPClient carries the API, token and presigned calls. Nil means a
	// client with dial, TLS and response-header timeouts but no overall
	// timeout, because downloads stream: bound calls with ctx. A custom
	// transport should set ExpectContinueTimeout, or an upload the store
	// refuses may fail as a reset connection instead of a clear answer.
	HTTPClient *http.Client
	// Retry is the retry policy; the zero value means the defaults.
	Retry RetryPolicy
	// UserAgent is sent on every request; "" means DefaultUserAgent.
	UserAgent string
	// Observer, when set, is told of every attempt, Retry-After wait and
	// token fetch (metrics and traces).
	Observer Observer
}

// DefaultUserAgent is the User-Agent sent when Config.UserAgent is empty.
const DefaultUserAgent = "qubs-fhir-bridge-qubs-client"

// RetryPolicy says how often and how patiently retryable calls are retried:
// GETs on 429, 408, 5xx and transport errors; POSTs only when they carry an
// Idempotency-Key. Zero fields take the defaults.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts including the first; default 5.
	// 1 disables retries.
	MaxAttempts int
	// BaseDelay is the backoff before the second attempt, doubled for each
	// further one; default 200ms. Each wait is drawn uniformly from zero to
	// the backoff ("full jitter") so that many clients do not retry in step.
	BaseDelay time.Duration
	// MaxDelay caps the backoff; default 10s.
	MaxDelay time.Duration
	// MaxRetryAfter is the longest Retry-After the client waits for; a
	// longer one ends the call at once with KindTransient, since the caller
	// is better placed to decide than a goroutine parked for minutes.
	// Default 60s.
	MaxRetryAfter time.Duration
}

// Retry policy defaults.
const (
	DefaultMaxAttempts   = 5
	DefaultBaseDelay     = 200 * time.Millisecond
	DefaultMaxDelay      = 10 * time.Second
	DefaultMaxRetryAfter = 60 * time.Second
)

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.BaseDelay == 0 {
		p.BaseDelay = DefaultBaseDelay
	}
	if p.MaxDelay == 0 {
		p.MaxDelay = DefaultMaxDelay
	}
	if p.MaxDelay < p.BaseDelay {
		p.MaxDelay = p.BaseDelay
	}
	if p.MaxRetryAfter == 0 {
		p.MaxRetryAfter = DefaultMaxRetryAfter
	}
	return p
}

// Client is a client of the QUBS Integrations API. It is safe for
// concurrent use; one Client should serve the whole process so that its
// access token is shared.
type Client struct {
	base      string // origin + optional path prefix, without a trailing slash
	hc        *http.Client
	retry     RetryPolicy
	userAgent string
	tokens    *tokenCache
	observer  Observer

	// now and sleep are the client's view of time, replaced in tests so
	// that expiry and backoff can be checked without waiting.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	// jitter returns a uniformly random duration in [0, d].
	jitter func(d time.Duration) time.Duration
}

// New returns a Client for cfg. It does not contact QUBS; call Token to
// check the credentials.
func New(cfg Config) (_ *Client, err error) {
	defer wrap(&err, "qubs.New")
	base, err := checkURL("BaseURL", cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	base = strings.TrimRight(base, "/")
	base = strings.TrimSuffix(base, "/integrations/v1")
	if _, err := checkURL("TokenURL", cfg.TokenURL); err != nil {
		return nil, err
	}
	if cfg.ClientID == "" {
		return nil, invalidf("ClientID is required")
	}
	switch cfg.AuthStyle {
	case oauth2.AuthStyleAutoDetect, oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader:
	default:
		return nil, invalidf("AuthStyle %d is unknown", cfg.AuthStyle)
	}
	r := cfg.Retry
	if r.MaxAttempts < 0 || r.BaseDelay < 0 || r.MaxDelay < 0 || r.MaxRetryAfter < 0 {
		return nil, invalidf("RetryPolicy fields must not be negative")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = defaultHTTPClient()
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = DefaultUserAgent
	}
	c := &Client{
		base:      base,
		hc:        hc,
		retry:     r.withDefaults(),
		userAgent: ua,
		observer:  cfg.Observer,
		now:       time.Now,
		sleep:     sleepCtx,
		jitter:    fullJitter,
	}
	c.tokens = &tokenCache{
		cc: &clientcredentials.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			TokenURL:     cfg.TokenURL,
			AuthStyle:    cfg.AuthStyle,
		},
		hc:        &http.Client{Transport: &userAgentTransport{base: hc, ua: ua, c: c}, CheckRedirect: hc.CheckRedirect, Jar: hc.Jar, Timeout: hc.Timeout},
		now:       func() time.Time { return c.now() },
		expiresIn: tokenExpiryDelta,
	}
	if cfg.Observer != nil {
		c.tokens.fetched = cfg.Observer.TokenFetch
	}
	return c, nil
}

func checkURL(field, raw string) (string, error) {
	if raw == "" {
		return "", invalidf("%s is required", field)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", invalidf("%s must be an absolute http(s) URL", field)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", invalidf("%s must not have a query or fragment", field)
	}
	return raw, nil
}

// defaultHTTPClient has timeouts on every phase before the response body
// but none on the body, because Download streams attachments of any size.
func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 60 * time.Second
	t.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: t}
}

// userAgentTransport sets the User-Agent of token requests, which
// package oauth2 builds itself, and shows them to the observer.
type userAgentTransport struct {
	base *http.Client
	ua   string
	c    *Client
}

func (t *userAgentTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", t.ua)
	rt := t.base.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	r, end := t.c.observeAttempt(r, Attempt{Operation: OpToken, Number: 1, ToQUBS: true})
	resp, err := rt.RoundTrip(r)
	if err != nil {
		end(0, err)
		return nil, err
	}
	end(resp.StatusCode, nil)
	return resp, nil
}

// Token obtains an access token, or reuses the cached one while it is
// valid. It makes a single attempt, for readiness checks: KindUnauthorized
// when the token endpoint refuses the credentials, KindTransient when it
// cannot be reached or fails.
func (c *Client) Token(ctx context.Context) (err error) {
	defer wrap(&err, "qubs.Token")
	_, _, err = c.tokens.get(ctx)
	return err
}

// request describes one logical call; send turns it into one or more
// attempts.
type request struct {
	// op names the call for metrics and traces (an Op* constant).
	op     string
	method string
	url    string
	// body is the exact JSON body, resent unchanged on every retry.
	body    []byte
	idemKey string
	// api marks calls to the QUBS API: they carry the bearer token, the
	// correlation id and Accept, and their errors are RFC 7807 problems.
	// Presigned URLs get none of that: a bearer token must never reach
	// the object store.
	api bool
	// retry allows retries on 408, 429, 5xx and transport errors.
	retry bool
	// newBody, when set, supplies the streamed body of a single-attempt
	// request (uploads) with its length.
	newBody func() (io.Reader, int64)
	header  http.Header
	// classify turns a non-2xx response into an error; nil means apiError.
	classify func(resp *http.Response, corr string) *Error
	// decode, when set, consumes and closes a 2xx body inside the retry
	// loop, so that an answer lost halfway through its body is retried
	// like one lost before it.
	decode func(resp *http.Response, corr string) error
}

// send runs r until it succeeds, fails for good, or the retry policy or
// ctx ends it. It returns a 2xx response, whose body the caller must close
// unless r.decode consumed it, or an *Error.
func (c *Client) send(ctx context.Context, r *request) (*http.Response, error) {
	corr := ""
	if r.api {
		corr = sendableCorrelationID(CorrelationID(ctx))
	}
	classify := r.classify
	if classify == nil {
		classify = apiError
	}
	renewed := false
	// sent counts the attempts that went out, the 401 renewal included,
	// for the observer's retry label; attempt is the retry budget.
	sent := 0
	for attempt := 1; ; attempt++ {
		req, err := c.newHTTPRequest(ctx, r, corr)
		if err != nil {
			return nil, err
		}
		var gen uint64
		if r.api {
			tok, g, err := c.tokens.get(ctx)
			if err != nil {
				e := asError(err)
				e.CorrelationID = corr
				// Nothing reached the API yet, so even a POST without an
				// Idempotency-Key may try again after a token failure.
				if e.Kind != KindTransient || ctx.Err() != nil {
					return nil, e
				}
				if err := c.pause(ctx, attempt, 0, false, r.op); err != nil {
					return nil, withCause(e, err)
				}
				continue
			}
			gen = g
			req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		}
		sent++
		req, end := c.observeAttempt(req, Attempt{Operation: r.op, Number: sent, ToQUBS: r.api})
		resp, err := c.hc.Do(req)
		if err != nil {
			end(0, err)
		} else {
			end(resp.StatusCode, nil)
		}
		if err != nil {
			e := transportError(err, corr)
			if !r.retry || ctx.Err() != nil || e.Kind != KindTransient {
				return nil, e
			}
			if err := c.pause(ctx, attempt, 0, false, r.op); err != nil {
				return nil, withCause(e, err)
			}
			continue
		}
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			if r.decode == nil {
				return resp, nil
			}
			err := r.decode(resp, corr)
			if err == nil {
				return resp, nil
			}
			e := asError(err)
			if !r.retry || ctx.Err() != nil || e.Kind != KindTransient {
				return nil, e
			}
			if err := c.pause(ctx, attempt, 0, false, r.op); err != nil {
				return nil, withCause(e, err)
			}
			continue
		}
		if resp.StatusCode == http.StatusUnauthorized && r.api && !renewed {
			// The token may have been revoked or have expired early by
			// QUBS's clock: renew it once and try again. A 401 means the
			// request was refused before it was handled, so this is safe
			// for any method, and does not count as an attempt.
			discard(resp)
			renewed = true
			c.tokens.invalidate(gen)
			attempt--
			continue
		}
		e := classify(resp, corr)
		ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), c.now())
		e.RetryAfter, e.HasRetryAfter = ra, ok
		if !r.retry || !retryableStatus(resp.StatusCode) {
			return nil, e
		}
		if ok && ra > c.retry.MaxRetryAfter {
			return nil, withCause(e, fmt.Errorf("Retry-After %s exceeds the %s the client waits", ra, c.retry.MaxRetryAfter))
		}
		if err := c.pause(ctx, attempt, ra, ok, r.op); err != nil {
			return nil, withCause(e, err)
		}
	}
}

// pause waits before the attempt after attempt: retryAfter when the server
// gave one, else a jittered exponential backoff. It fails when the
// attempts are used up or ctx ends (or would end) first.
func (c *Client) pause(ctx context.Context, attempt int, retryAfter time.Duration, haveRetryAfter bool, op string) error {
	if attempt >= c.retry.MaxAttempts {
		return fmt.Errorf("gave up after %d attempts", attempt)
	}
	d := retryAfter
	if !haveRetryAfter {
		d = c.jitter(backoff(c.retry, attempt))
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		// Waiting past the deadline only to fail is pointless; the caller
		// learns now, with the real cause.
		return fmt.Errorf("retry in %s would pass the context deadline: %w", d, context.DeadlineExceeded)
	}
	if haveRetryAfter {
		return c.sleepRetryAfter(ctx, op, d)
	}
	return c.sleep(ctx, d)
}

func (c *Client) newHTTPRequest(ctx context.Context, r *request, corr string) (*http.Request, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body) // a fresh reader per attempt: the identical bytes
	}
	var size int64 = -1
	if r.newBody != nil {
		body, size = r.newBody()
	}
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, body)
	if err != nil {
		return nil, &Error{Kind: KindInvalid, Err: fmt.Errorf("building the request: %w", stripURL(err))}
	}
	if r.newBody != nil {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
		// No GetBody: the transport must not silently resend a streamed
		// upload on a fresh connection.
		req.GetBody = nil
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.userAgent)
	if r.api {
		req.Header.Set("Accept", "application/json, application/problem+json")
		if r.body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if r.idemKey != "" {
			req.Header.Set("Idempotency-Key", r.idemKey)
		}
		if corr != "" {
			req.Header.Set("X-Correlation-Id", corr)
		}
	}
	return req, nil
}

// sendableCorrelationID drops an id that cannot travel in a header: a bad
// correlation id must not fail a report submission.
func sendableCorrelationID(id string) string {
	if len(id) > 200 {
		return ""
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return ""
		}
	}
	return id
}

// transportError classifies a failed http.Client.Do. The URL is left out
// of the message: a presigned URL is itself a credential.
func transportError(err error, corr string) *Error {
	e := &Error{Kind: KindTransient, CorrelationID: corr, Err: stripURL(err)}
	if errors.Is(err, errBodyShort) || errors.Is(err, errBodyLong) {
		e.Kind = KindInvalid
	}
	return e
}

// stripURL removes the URL from a *url.Error, keeping the operation and
// the cause (so errors.Is still finds context.Canceled and friends).
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s request: %w", strings.ToUpper(ue.Op), ue.Err)
	}
	return err
}

// discard drains a little of an unwanted body so the connection can be
// reused, then closes it.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
}

// wrap gives a failed operation its name. It keeps an *Error's kind and
// turns any other error into KindInternal, so every error the package
// returns is an *Error.
func wrap(errp *error, op string) {
	if *errp == nil {
		return
	}
	var e *Error
	if errors.As(*errp, &e) {
		if e.Op == "" {
			e.Op = op
		}
		*errp = e
		return
	}
	*errp = &Error{Kind: KindInternal, Op: op, Err: *errp}
}

// asError returns err as an *Error, KindInternal when it is not one.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Kind: KindInternal, Err: err}
}

// withCause records why e is final (ctx ended, attempts used up) without
// changing its kind.
func withCause(e *Error, cause error) *Error {
	if e.Err == nil {
		e.Err = cause
	} else {
		e.Err = fmt.Errorf("%w; %w", e.Err, cause)
	}
	return e
}

func invalidf(format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Err: fmt.Errorf(format, args...)}
}
