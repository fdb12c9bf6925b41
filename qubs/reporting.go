package qubs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// apiURL builds /integrations/v1/{domain}/reporting/appointments/{segs...}
// with every segment path-escaped, so an id holding "/" or "?" cannot
// address another resource.
func (c *Client) apiURL(domain string, segs ...string) (string, error) {
	if err := checkSegment("domain", domain); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(c.base)
	b.WriteString("/integrations/v1/")
	b.WriteString(url.PathEscape(domain))
	b.WriteString("/reporting/appointments")
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String(), nil
}

// checkSegment refuses path segments that cannot name a resource: empty
// ones (a caller's bug), and "." and "..", which URL resolution removes
// (RFC 3986 §5.2.4), so that no QUBS resource can have them as its id:
// they are NotFound, as any other id QUBS does not know, and never reach
// QUBS addressing something else.
func checkSegment(what, s string) error {
	switch s {
	case "":
		return invalidf("%s is empty", what)
	case ".", "..":
		return &Error{Kind: KindNotFound, Err: fmt.Errorf("%s %q cannot be addressed in a URL path", what, s)}
	}
	return nil
}

// appointmentURL checks the appointment id and builds its URL.
func (c *Client) appointmentURL(domain, appointmentID string, segs ...string) (string, error) {
	if err := checkSegment("appointmentId", appointmentID); err != nil {
		return "", err
	}
	return c.apiURL(domain, append([]string{appointmentID}, segs...)...)
}

// GetPending returns an appointment in PENDING REPORTING. QUBS answers 404
// (KindNotFound) for unknown appointments and for those in any other
// status.
func (c *Client) GetPending(ctx context.Context, domain, appointmentID string) (_ *Appointment, err error) {
	defer wrap(&err, "qubs.GetPending")
	if appointmentID == "pending" {
		// GET .../appointments/pending is the list operation: an
		// appointment with that id cannot be fetched on its own.
		return nil, &Error{Kind: KindNotFound, Err: fmt.Errorf(`appointment id "pending" collides with the list route`)}
	}
	u, err := c.appointmentURL(domain, appointmentID)
	if err != nil {
		return nil, err
	}
	var a Appointment
	if err := c.getJSON(ctx, OpGetAppointment, u, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// attachmentQuery encodes AttachmentOptions. A TTL outside 60..3600 is sent
// as is: QUBS clamps it.
func attachmentQuery(o AttachmentOptions) (string, error) {
	q := url.Values{}
	if o.URLTTLSeconds < 0 {
		return "", invalidf("URLTTLSeconds %d is negative", o.URLTTLSeconds)
	}
	if o.URLTTLSeconds > 0 {
		q.Set("urlTtlSeconds", strconv.Itoa(o.URLTTLSeconds))
	}
	switch o.Disposition {
	case "":
	case DispositionInline, DispositionAttachment:
		q.Set("disposition", string(o.Disposition))
	default:
		return "", invalidf("disposition %q is neither inline nor attachment", o.Disposition)
	}
	return q.Encode(), nil
}

// ListAttachments returns the attachments of a pending reporting
// appointment, each with a short-lived presigned URL when QUBS has one.
func (c *Client) ListAttachments(ctx context.Context, domain, appointmentID string, opts AttachmentOptions) (_ []Attachment, err error) {
	defer wrap(&err, "qubs.ListAttachments")
	u, err := c.appointmentURL(domain, appointmentID, "attachments")
	if err != nil {
		return nil, err
	}
	q, err := attachmentQuery(opts)
	if err != nil {
		return nil, err
	}
	if q != "" {
		u += "?" + q
	}
	var out []Attachment
	if err := c.getJSON(ctx, OpListAttachments, u, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// GetAttachment returns one attachment of a pending reporting appointment.
func (c *Client) GetAttachment(ctx context.Context, domain, appointmentID, attachmentGUID string, opts AttachmentOptions) (_ *Attachment, err error) {
	defer wrap(&err, "qubs.GetAttachment")
	if err := checkSegment("attachmentGuid", attachmentGUID); err != nil {
		return nil, err
	}
	u, err := c.appointmentURL(domain, appointmentID, "attachments", attachmentGUID)
	if err != nil {
		return nil, err
	}
	q, err := attachmentQuery(opts)
	if err != nil {
		return nil, err
	}
	if q != "" {
		u += "?" + q
	}
	var a Attachment
	if err := c.getJSON(ctx, OpGetAttachment, u, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// ListComments returns the appointment's comments and alerts and those of
// its patient.
func (c *Client) ListComments(ctx context.Context, domain, appointmentID string) (_ []Comment, err error) {
	defer wrap(&err, "qubs.ListComments")
	u, err := c.appointmentURL(domain, appointmentID, "comments")
	if err != nil {
		return nil, err
	}
	var out []Comment
	if err := c.getJSON(ctx, OpListComments, u, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// GetComment returns one appointment or patient comment.
func (c *Client) GetComment(ctx context.Context, domain, appointmentID, commentGUID string) (_ *Comment, err error) {
	defer wrap(&err, "qubs.GetComment")
	if err := checkSegment("commentGuid", commentGUID); err != nil {
		return nil, err
	}
	u, err := c.appointmentURL(domain, appointmentID, "comments", commentGUID)
	if err != nil {
		return nil, err
	}
	var cm Comment
	if err := c.getJSON(ctx, OpGetComment, u, &cm); err != nil {
		return nil, err
	}
	return &cm, nil
}

// CreateComment creates an appointment comment or alert. With a non-empty
// idempotencyKey the call is retried on transient failures with the same
// key and body, and a repeat of an earlier call returns the original
// comment; the same key with another body is KindConflict. Without a key
// nothing is retried, since a retry could duplicate the comment.
func (c *Client) CreateComment(ctx context.Context, domain, appointmentID string, in NewComment, idempotencyKey string) (_ *Comment, err error) {
	defer wrap(&err, "qubs.CreateComment")
	if strings.TrimSpace(in.CommentText) == "" {
		return nil, invalidf("commentText is blank")
	}
	if in.CommentType != nil && !in.CommentType.Valid() {
		return nil, invalidf("commentType %q is not one of AC, AA, PC, PA", *in.CommentType)
	}
	var out Comment
	if err := c.postJSON(ctx, OpCreateComment, domain, appointmentID, []string{"comments"}, in, idempotencyKey, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SubmitReport submits report content; it overwrites any earlier report of
// the appointment. Idempotency and retries are as for CreateComment.
func (c *Client) SubmitReport(ctx context.Context, domain, appointmentID string, in ReportSubmission, idempotencyKey string) (_ *ReportReceipt, err error) {
	defer wrap(&err, "qubs.SubmitReport")
	if in.ReportText == "" {
		return nil, invalidf("reportText is empty")
	}
	if len(in.ReportText) > MaxReportTextBytes {
		return nil, &Error{Kind: KindTooLarge, Err: fmt.Errorf("reportText is %d bytes, more than %d", len(in.ReportText), MaxReportTextBytes)}
	}
	if !strings.EqualFold(in.ReportStatus, ReportPreliminary) && !strings.EqualFold(in.ReportStatus, ReportFinal) {
		return nil, invalidf("reportStatus %q is neither preliminary nor final", in.ReportStatus)
	}
	var out ReportReceipt
	if err := c.postJSON(ctx, OpCreateReport, domain, appointmentID, []string{"report"}, in, idempotencyKey, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateUploadURLs creates report attachment metadata and a presigned PUT
// URL per item (1..20 items). QUBS keeps its idempotency keys for only 15
// minutes, the lifetime of the URLs. Idempotency and retries are as for
// CreateComment.
func (c *Client) CreateUploadURLs(ctx context.Context, domain, appointmentID string, in UploadRequest, idempotencyKey string) (_ *UploadURLs, err error) {
	defer wrap(&err, "qubs.CreateUploadURLs")
	if len(in.Items) == 0 || len(in.Items) > MaxUploadItems {
		return nil, invalidf("%d upload items, want 1..%d", len(in.Items), MaxUploadItems)
	}
	// fileName is left to QUBS: its 255-character limit may apply before
	// or after QUBS strips path segments, and an empty name gets a
	// generated one.
	for i, it := range in.Items {
		if it.ContentType != nil && *it.ContentType != ContentTypePDF && *it.ContentType != ContentTypeDICOM {
			return nil, invalidf("item %d: contentType must be %s or %s", i, ContentTypePDF, ContentTypeDICOM)
		}
	}
	var out UploadURLs
	if err := c.postJSON(ctx, OpUploadURL, domain, appointmentID, []string{"report", "attachments"}, in, idempotencyKey, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// postJSON POSTs in to an appointment sub-resource and decodes the answer.
// The body is marshalled once, so every retry sends identical bytes under
// the same key, as QUBS's idempotency requires.
func (c *Client) postJSON(ctx context.Context, op, domain, appointmentID string, segs []string, in any, key string, out any) error {
	if err := checkIdempotencyKey(key); err != nil {
		return err
	}
	u, err := c.appointmentURL(domain, appointmentID, segs...)
	if err != nil {
		return err
	}
	body, err := json.Marshal(in)
	if err != nil {
		return invalidf("encoding the request: %v", err)
	}
	_, err = c.send(ctx, &request{
		op:      op,
		method:  http.MethodPost,
		url:     u,
		body:    body,
		idemKey: key,
		api:     true,
		retry:   key != "",
		decode:  decodeInto(out),
	})
	return err
}
