package qubs

import (
	"context"
	"net/http"
	"time"
)

// Operations name the calls the client makes, for metrics and traces. They
// are fixed words: never an id, a URL or anything a caller sent.
const (
	OpListAppointments = "list_appointments"
	OpGetAppointment   = "get_appointment"
	OpListAttachments  = "list_attachments"
	OpGetAttachment    = "get_attachment"
	OpListComments     = "list_comments"
	OpGetComment       = "get_comment"
	OpCreateComment    = "create_comment"
	OpCreateReport     = "create_report"
	OpUploadURL        = "upload_url"
	OpUploadPut        = "upload_put"
	OpDownload         = "download"
	OpToken            = "token"
)

// Operations lists every operation name, so that an observer can prepare
// what it needs per operation once rather than on each call.
var Operations = []string{
	OpListAppointments, OpGetAppointment, OpListAttachments, OpGetAttachment,
	OpListComments, OpGetComment, OpCreateComment, OpCreateReport,
	OpUploadURL, OpUploadPut, OpDownload, OpToken,
}

// Attempt describes one HTTP attempt of a call.
type Attempt struct {
	// Operation is one of the Op* names.
	Operation string
	// Number is 1 for the first attempt of a call, 2 for its first retry...
	Number int
	// ToQUBS is true for the API and the token endpoint, false for
	// presigned URLs (the object store): only QUBS is sent trace context.
	ToQUBS bool
}

// Retry reports whether the attempt is a retry.
func (a Attempt) Retry() bool { return a.Number > 1 }

// Observer watches the client's calls for metrics and traces, so that this
// package needs neither. Its methods must be safe for concurrent use and
// must not hold on to the request.
type Observer interface {
	// Attempt is told of an attempt before it is sent. It returns the
	// request to send, which may carry a new context (a span) and more
	// headers (W3C traceparent), and end, which the client calls once with
	// the HTTP status of the answer, or 0 and the error when none came.
	Attempt(req *http.Request, a Attempt) (*http.Request, func(status int, err error))
	// RetryAfter is told how long a call waited because QUBS answered
	// with Retry-After.
	RetryAfter(operation string, waited time.Duration)
	// TokenFetch is told of each access token request and its outcome
	// (nil on success).
	TokenFetch(err error)
}

// observeAttempt runs one attempt through the observer, when there is one.
func (c *Client) observeAttempt(req *http.Request, a Attempt) (*http.Request, func(int, error)) {
	if c.observer == nil {
		return req, nopEnd
	}
	return c.observer.Attempt(req, a)
}

func nopEnd(int, error) {}

// sleepRetryAfter waits d because QUBS said so, and tells the observer
// how long it actually waited (less than d when ctx ended first).
func (c *Client) sleepRetryAfter(ctx context.Context, op string, d time.Duration) error {
	start := time.Now()
	err := c.sleep(ctx, d)
	if c.observer != nil {
		waited := d
		if err != nil {
			waited = time.Since(start)
		}
		c.observer.RetryAfter(op, waited)
	}
	return err
}
