package qubs

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/ and run as ordinary
// tests; `go test -fuzz FuzzDecodeProblem ./qubs` explores further.

// countingReader counts what is read from it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// FuzzDecodeProblem feeds arbitrary error bodies and statuses to the
// problem decoder and the error builder: no panic, at most maxErrorBody
// read, the kind from the status alone, and a message that never holds
// the problem's detail, type or instance (they may echo PHI).
func FuzzDecodeProblem(f *testing.F) {
	f.Add([]byte(`{"type":"about:blank","title":"Not Found","status":404,"detail":"Jane Doe","requestId":"r-1"}`), 404)
	f.Add([]byte(`<html>502</html>`), 502)
	f.Add([]byte(`{"title":`), 400)
	f.Fuzz(func(t *testing.T, body []byte, status int) {
		p := decodeProblem(body)
		if p != nil && *p == (Problem{}) {
			t.Fatal("an empty problem is reported as nil")
		}
		if p != nil && !json.Valid(bytes.TrimSpace(body)) {
			t.Fatal("a problem from invalid JSON")
		}

		cr := &countingReader{r: io.MultiReader(bytes.NewReader(body), strings.NewReader(strings.Repeat(" ", maxErrorBody)))}
		resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(cr)}
		e := apiError(resp, "corr")
		if cr.n > maxErrorBody {
			t.Fatalf("read %d bytes of an error body", cr.n)
		}
		if e.Kind != kindForStatus(status) || e.Status != status || e.CorrelationID != "corr" {
			t.Fatalf("error %+v for status %d", e, status)
		}
		// The message is exactly what the title and request id give.
		want := &Error{Kind: e.Kind, Status: e.Status, RequestID: e.RequestID}
		if e.Problem != nil {
			want.Problem = &Problem{Title: e.Problem.Title}
		}
		if got := e.Error(); got != want.Error() {
			t.Fatalf("message %q, want %q", got, want.Error())
		}
	})
}

// FuzzPageHandling checks paging decisions on arbitrary page bodies and
// tokens: the token survives the query string unchanged, the walk stops
// exactly on an empty, null or omitted nextToken, and a repeated token is
// an error rather than an endless loop.
func FuzzPageHandling(f *testing.F) {
	f.Add([]byte(`{"items":[{"appointmentId":"A1"}],"nextToken":"DDB_NEXT_TOKEN"}`), "")
	f.Add([]byte(`{"items":[],"nextToken":null}`), "prev")
	f.Add([]byte(`{"items":[],"nextToken":"same"}`), "same")
	f.Fuzz(func(t *testing.T, body []byte, prev string) {
		q, err := url.ParseQuery(pageQuery(7, prev))
		if err != nil {
			t.Fatalf("pageQuery: %v", err)
		}
		if q.Get("nextToken") != prev || q.Has("nextToken") != (prev != "") || q.Get("pageSize") != "7" {
			t.Fatalf("query %v for token %q", q, prev)
		}

		resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body))}
		var p AppointmentPage
		if err := decodeJSON(resp, "", &p); err != nil {
			if KindOf(err) != KindInternal {
				t.Fatalf("decode error of kind %v", KindOf(err))
			}
			return
		}
		next, more, err := nextPage(prev, &p)
		switch {
		case p.NextToken == nil || *p.NextToken == "":
			if more || err != nil || next != "" {
				t.Fatalf("walk goes on after nextToken %v", p.NextToken)
			}
		case *p.NextToken == prev:
			if more || err == nil {
				t.Fatal("a repeated token does not stop the walk")
			}
		default:
			if !more || err != nil || next != *p.NextToken {
				t.Fatalf("walk stops at token %q", *p.NextToken)
			}
		}
	})
}

// FuzzRetryAfter checks that any Retry-After value yields a usable wait.
func FuzzRetryAfter(f *testing.F) {
	f.Add("120")
	f.Add("Fri, 10 Jan 2025 03:00:30 GMT")
	f.Add("-1")
	now := time.Date(2025, 1, 10, 3, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := parseRetryAfter(v, now)
		if d < 0 {
			t.Fatalf("negative wait %v for %q", d, v)
		}
		if !ok && d != 0 {
			t.Fatalf("wait %v without a usable header %q", d, v)
		}
	})
}
