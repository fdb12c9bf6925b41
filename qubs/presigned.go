package qubs

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// Download is a streamed attachment. The caller must close Body.
type Download struct {
	Body io.ReadCloser
	// ContentType is the store's Content-Type, "" when it sent none; QUBS
	// documents none for attachments, so callers may prefer one derived
	// from the attachment's FileName.
	ContentType string
	// ContentLength is the size in bytes, -1 when unknown.
	ContentLength      int64
	ContentDisposition string
}

// Upload PUTs a report artifact to a presigned URL from CreateUploadURLs,
// streaming body in one request with Content-Length: size. contentType must
// be the one declared when the URL was created ("" if none was declared).
//
// It fails before sending with KindTooLarge when size exceeds
// MaxUploadBytes, and with KindExpired when u.UploadURLExpiresAtUTC has
// passed. body must yield exactly size bytes, else KindInvalid. The store's
// 403, which is how presigned URLs refuse once expired (or already used),
// is KindExpired.
//
// Uploads are never retried: the documentation says a URL is for a single
// successful PUT and to "request a new URL if an upload fails or expires",
// and a streamed body cannot be replayed anyway. No bearer token is sent:
// the URL is its own credential.
func (c *Client) Upload(ctx context.Context, u UploadURL, contentType string, size int64, body io.Reader) (err error) {
	defer wrap(&err, "qubs.Upload")
	if size > MaxUploadBytes {
		return &Error{Kind: KindTooLarge, Err: fmt.Errorf("upload of %d bytes exceeds the %d-byte limit", size, MaxUploadBytes)}
	}
	if size < 0 {
		return invalidf("upload size %d is negative", size)
	}
	if body == nil && size > 0 {
		return invalidf("upload body is nil")
	}
	if err := checkPresigned(u.UploadURL); err != nil {
		return err
	}
	if u.UploadURLExpiresAtUTC != nil && !c.now().Before(*u.UploadURLExpiresAtUTC) {
		return &Error{Kind: KindExpired, Err: fmt.Errorf("upload URL expired at %s; request a new one with CreateUploadURLs", u.UploadURLExpiresAtUTC.UTC().Format("2006-01-02T15:04:05Z"))}
	}
	if size == 0 && body != nil {
		// An empty upload travels as http.NoBody (a zero ContentLength with
		// a body would be sent chunked), so check the body here.
		if err := (&exactReader{r: body}).checkEnd(); err != io.EOF {
			if err == errBodyLong {
				return invalidf("%v", err)
			}
			return &Error{Kind: KindInternal, Err: fmt.Errorf("reading the upload body: %w", err)}
		}
	}
	h := http.Header{}
	if size > 0 {
		// The store checks the URL (signature, expiry, single use) before
		// the body. Waiting for its 100 Continue means a refusal arrives
		// as an answer, rather than as a connection reset halfway through
		// the body that would hide why. S3 supports it; it takes effect
		// when the transport's ExpectContinueTimeout is set, as it is in
		// the default client.
		h.Set("Expect", "100-continue")
	}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	resp, err := c.send(ctx, &request{
		op:     OpUploadPut,
		method: http.MethodPut,
		url:    u.UploadURL,
		header: h,
		newBody: func() (io.Reader, int64) {
			if size == 0 {
				return nil, 0
			}
			return &exactReader{r: body, left: size}, size
		},
		classify: storeError,
	})
	if err != nil {
		return err
	}
	discard(resp)
	return nil
}

// Download streams the content behind a presigned attachment URL (from
// ListAttachments or GetAttachment). It is retried like a GET until the
// response headers arrive; the body is the caller's to read and close. A
// 403 from the store is KindExpired: request the attachment again for a
// fresh URL. No bearer token is sent.
func (c *Client) Download(ctx context.Context, presignedURL string) (_ *Download, err error) {
	defer wrap(&err, "qubs.Download")
	if err := checkPresigned(presignedURL); err != nil {
		return nil, err
	}
	resp, err := c.send(ctx, &request{
		op:       OpDownload,
		method:   http.MethodGet,
		url:      presignedURL,
		retry:    true,
		classify: storeError,
	})
	if err != nil {
		return nil, err
	}
	return &Download{
		Body:               resp.Body,
		ContentType:        resp.Header.Get("Content-Type"),
		ContentLength:      resp.ContentLength,
		ContentDisposition: resp.Header.Get("Content-Disposition"),
	}, nil
}

func checkPresigned(raw string) error {
	if raw == "" {
		return invalidf("presigned URL is empty")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The URL itself is not quoted: it is a credential.
		return invalidf("presigned URL is not an absolute http(s) URL")
	}
	return nil
}

// s3Error is the XML error body of an S3-compatible store, the kind that
// stands behind presigned URLs. Only Code is kept: it is a fixed token and
// safe to log, unlike Message, which may quote the request.
type s3Error struct {
	Code string `xml:"Code"`
}

// storeError classifies a non-2xx answer of the object store behind a
// presigned URL. It differs from the API in one way: a presigned URL that
// has expired, or was already used for its one PUT, is refused with 403,
// which here means KindExpired rather than a scope problem.
func storeError(resp *http.Response, corr string) *Error {
	body := readErrorBody(resp)
	e := &Error{Kind: kindForStatus(resp.StatusCode), Status: resp.StatusCode, CorrelationID: corr}
	var se s3Error
	_ = xml.Unmarshal(body, &se)
	code := se.Code
	if len(code) > 64 {
		code = code[:64]
	}
	switch {
	case resp.StatusCode == http.StatusForbidden && code == "SignatureDoesNotMatch":
		// The URL was altered, or (with S3) a signed header such as
		// Content-Type differs from the one the URL was made for: a new
		// URL with the same request would fail the same way.
		e.Kind = KindInvalid
		e.Err = fmt.Errorf("the store refused the presigned URL's signature (altered URL or a Content-Type other than the declared one)")
	case resp.StatusCode == http.StatusForbidden:
		e.Kind = KindExpired
		e.Err = fmt.Errorf("the store refused the presigned URL (expired, already used or not valid for this request; code %q): request a new URL", code)
	case code != "":
		e.Err = fmt.Errorf("the store answered code %q", code)
	}
	if code == "EntityTooLarge" {
		e.Kind = KindTooLarge
	}
	return e
}

// Upload body length errors, reported as KindInvalid.
var (
	errBodyShort = errors.New("upload body is shorter than the declared size")
	errBodyLong  = errors.New("upload body is longer than the declared size")
)

// exactReader yields exactly left bytes of r and fails otherwise, so a
// wrong size is caught while streaming instead of sending a truncated or
// silently cut artifact.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		// Look for a byte past the declared size.
		return 0, e.checkEnd()
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF {
		if e.left > 0 {
			return n, errBodyShort
		}
		err = nil
	}
	if e.left == 0 && err == nil {
		// The transport stops reading at Content-Length, so a body
		// longer than declared must be caught while its last declared
		// bytes are still in hand: failing this read aborts the request
		// before the store can take a truncated file.
		if end := e.checkEnd(); end != io.EOF {
			return 0, end
		}
		return n, io.EOF
	}
	return n, err
}

// checkEnd returns io.EOF when r is exhausted and errBodyLong when it has
// more. A reader that keeps answering (0, nil) is given up on, as io.Copy
// would.
func (e *exactReader) checkEnd() error {
	var one [1]byte
	for range 100 {
		n, err := e.r.Read(one[:])
		if n > 0 {
			return errBodyLong
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}
