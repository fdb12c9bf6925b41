package qubs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Body size limits. QUBS documents none for responses; these are far above
// anything a valid answer needs (a page of 500 appointments is well under
// 8 MiB) and keep a broken or hostile server from exhausting memory.
const (
	maxErrorBody    = 64 << 10
	maxResponseBody = 32 << 20
)

// kindForStatus is the one mapping of an HTTP status to an error kind.
//
// The documentation names only 404, 409 and 429; the rest follow HTTP.
// 408 counts as transient like 429 and 5xx. 4xx statuses without a kind of
// their own (405, 411, 415, ...) mean QUBS refused the request as sent, so
// they are KindInvalid; anything else unexpected is KindInternal.
func kindForStatus(status int) Kind {
	switch {
	case status == http.StatusBadRequest, status == http.StatusUnprocessableEntity:
		return KindInvalid
	case status == http.StatusUnauthorized:
		return KindUnauthorized
	case status == http.StatusForbidden:
		return KindForbidden
	case status == http.StatusNotFound, status == http.StatusGone:
		return KindNotFound
	case status == http.StatusConflict:
		return KindConflict
	case status == http.StatusRequestEntityTooLarge:
		return KindTooLarge
	case retryableStatus(status):
		return KindTransient
	case status >= 400 && status < 500:
		return KindInvalid
	}
	return KindInternal
}

// retryableStatus reports whether a retry may get another answer.
func retryableStatus(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests ||
		(status >= 500 && status <= 599)
}

// apiError turns a non-2xx answer of the QUBS API into an *Error, reading
// at most maxErrorBody of the body and closing it.
func apiError(resp *http.Response, corrSent string) *Error {
	body := readErrorBody(resp)
	e := &Error{
		Kind:          kindForStatus(resp.StatusCode),
		Status:        resp.StatusCode,
		Problem:       decodeProblem(body),
		CorrelationID: resp.Header.Get("X-Correlation-Id"),
	}
	if e.CorrelationID == "" {
		e.CorrelationID = corrSent
	}
	if e.Problem != nil {
		e.RequestID = e.Problem.RequestID
	}
	if e.RequestID == "" {
		e.RequestID = resp.Header.Get("X-Request-Id")
	}
	return e
}

// readErrorBody reads at most maxErrorBody bytes of an error body and
// closes it. A huge body is cut short: the truncated JSON then fails to
// decode and the error simply has no Problem.
func readErrorBody(resp *http.Response) []byte {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return b
}

// decodeProblem decodes an RFC 7807 problem document. It returns nil for
// anything that is not a JSON object with at least one problem member, so
// an HTML error page from a proxy yields no Problem rather than an empty
// one. Unknown members (extensions) are ignored; members of the wrong
// type are dropped one by one rather than failing the whole document.
func decodeProblem(body []byte) *Problem {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil
	}
	var p Problem
	str := func(key string, dst *string) {
		if v, ok := raw[key]; ok {
			_ = json.Unmarshal(v, dst)
		}
	}
	str("type", &p.Type)
	str("title", &p.Title)
	str("detail", &p.Detail)
	str("instance", &p.Instance)
	str("requestId", &p.RequestID)
	if v, ok := raw["status"]; ok {
		_ = json.Unmarshal(v, &p.Status)
	}
	if p == (Problem{}) {
		return nil
	}
	return &p
}

// decodeJSON decodes a 2xx body into out, closing it. Unknown fields are
// tolerated (QUBS may add some); a body over maxResponseBody or one that is
// not the expected JSON is KindInternal.
//
// The body is read into a pooled buffer: a worklist page is ~136 KB, and
// io.ReadAll's doubling made ~300 KB of garbage per page. Nothing decoded
// may keep a reference into the buffer: the fast path copies the body into
// one string and service items into an arena of its own
// (appointmentdecode.go), and encoding/json copies what it keeps.
func decodeJSON(resp *http.Response, corr string, out any) error {
	defer resp.Body.Close()
	buf := getBodyBuffer(resp.ContentLength)
	defer putBodyBuffer(buf)
	_, err := buf.ReadFrom(io.LimitReader(resp.Body, maxResponseBody+1))
	b := buf.Bytes()
	if corrEcho := resp.Header.Get("X-Correlation-Id"); corrEcho != "" {
		corr = corrEcho
	}
	if err != nil {
		return &Error{Kind: KindTransient, Status: resp.StatusCode, CorrelationID: corr, Err: fmt.Errorf("reading the response: %w", stripURL(err))}
	}
	if len(b) > maxResponseBody {
		return &Error{Kind: KindInternal, Status: resp.StatusCode, CorrelationID: corr, Err: fmt.Errorf("response body exceeds %d bytes", maxResponseBody)}
	}
	if f, ok := out.(fastDecoder); ok && f.decodeFast(b) {
		return nil // appointmentdecode.go: encoding/json's result, faster
	}
	if err := json.Unmarshal(b, out); err != nil {
		// json's messages name types and offsets, never values.
		return &Error{Kind: KindInternal, Status: resp.StatusCode, CorrelationID: corr, Err: fmt.Errorf("decoding the response: %w", err)}
	}
	return nil
}

// bodyBuffers holds the buffers decodeJSON reads bodies into.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody keeps a rare huge answer's buffer from being held by the
// pool for good; the worklist's pages are far below it.
const maxPooledBody = 1 << 20

// getBodyBuffer returns an empty buffer with room for a body of the
// declared length (-1: unknown) and bytes.MinRead more, so that ReadFrom
// reads it without growing and finds EOF without a copy.
func getBodyBuffer(declared int64) *bytes.Buffer {
	buf := bodyBuffers.Get().(*bytes.Buffer)
	if declared > 0 && declared <= maxResponseBody {
		buf.Grow(int(declared) + bytes.MinRead)
	}
	return buf
}

func putBodyBuffer(buf *bytes.Buffer) {
	if buf.Cap() > maxPooledBody {
		return
	}
	buf.Reset()
	bodyBuffers.Put(buf)
}

// parseRetryAfter reads a Retry-After header (RFC 9110 section 10.2.3):
// delta-seconds or an HTTP-date. A date in the past means "now". ok is
// false when the header is absent or unreadable, and the caller backs off
// on its own.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(maxDuration/time.Second) {
			return maxDuration, true // absurdly long: the caller gives up
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d = t.Sub(now)
	if d < 0 {
		d = 0
	}
	return d, true
}

const maxDuration = time.Duration(1<<63 - 1)

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// backoff is the exponential backoff ceiling before the attempt after
// attempt (1-based): BaseDelay doubled per attempt, capped at MaxDelay.
func backoff(p RetryPolicy, attempt int) time.Duration {
	d := p.BaseDelay
	for i := 1; i < attempt && d < p.MaxDelay; i++ {
		d *= 2
	}
	if d > p.MaxDelay || d <= 0 {
		d = p.MaxDelay
	}
	return d
}

// fullJitter draws uniformly from [0, d] (the "full jitter" of
// https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
func fullJitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
