package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// renderError is the one place an error becomes an HTTP status and an
// OperationOutcome. Diagnostics name the correlation id and, for upstream
// failures, the QUBS requestId, and never carry PHI: QUBS problem details
// may echo request data, so only their title is passed on.
func (s *Server) renderError(c *gin.Context, err error) {
	var qe *qubs.Error
	if errors.As(err, &qe) && qe.Kind == qubs.KindForbidden {
		// QUBS answers 403 for a domain outside the bridge's token, the
		// only thing it scopes by: for the client, that FHIR base does
		// not exist (qubsError answers 404), and the bridge remembers.
		s.domains.record(domainOf(c), false)
	}
	fe := toFHIRError(err)
	cid := correlationIDOf(c)
	issues := make([]fhir.Issue, len(fe.Issues))
	copy(issues, fe.Issues)
	if cid != "" {
		for i := range issues {
			issues[i].Diagnostics = strings.TrimSpace(issues[i].Diagnostics + " (correlation id " + cid + ")")
		}
	}
	attrs := []any{"correlation_id", cid, "route", c.FullPath(), "status", fe.Status}
	if errors.As(err, &qe) {
		attrs = append(attrs, "qubs_op", qe.Op, "qubs_kind", qe.Kind.String(), "qubs_status", qe.Status, "qubs_request_id", qe.RequestID)
	}
	switch {
	case fe.Status >= 500:
		// Error messages in this code base carry kinds, operations and
		// statuses, never request data: the chain is what makes a 500
		// diagnosable.
		if fe.Err != nil {
			attrs = append(attrs, "error", fe.Err.Error())
		}
		s.log.Warn("request failed", attrs...)
	case fe.Status != http.StatusNotFound:
		s.log.Info("request refused", attrs...)
	}
	if ra := retryAfter(err); ra != "" {
		c.Header("Retry-After", ra)
	}
	s.write(c, fe.Status, fhir.NewOutcome(issues...))
}

// toFHIRError maps any error to a status and issues: fhir.Error as is, QUBS
// errors by kind, deadlines to 504, everything else to a bare 500.
func toFHIRError(err error) *fhir.Error {
	var fe *fhir.Error
	if errors.As(err, &fe) {
		return fe
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fhir.Errorf(http.StatusRequestEntityTooLarge, "too-costly", "request body exceeds the limit of %d bytes", mbe.Limit)
	}
	var qe *qubs.Error
	if errors.As(err, &qe) {
		return qubsError(qe)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fhir.Errorf(http.StatusGatewayTimeout, "timeout", "the request took too long")
	}
	if errors.Is(err, context.Canceled) {
		// The client went away; nobody reads this answer.
		return fhir.Errorf(499, "exception", "request cancelled")
	}
	return &fhir.Error{Status: http.StatusInternalServerError, Issues: []fhir.Issue{{Severity: "error", Code: "exception", Diagnostics: "internal error"}}, Err: err}
}

func qubsError(qe *qubs.Error) *fhir.Error {
	ref := ""
	if qe.RequestID != "" {
		ref = " (QUBS requestId " + qe.RequestID + ")"
	}
	upstream := func(status int, code, msg string) *fhir.Error {
		return &fhir.Error{Status: status, Issues: []fhir.Issue{{Severity: "error", Code: code, Diagnostics: msg + ref}}, Err: qe}
	}
	switch qe.Kind {
	case qubs.KindNotFound:
		return upstream(http.StatusNotFound, "not-found", "not found in QUBS, or no longer pending reporting")
	case qubs.KindUnauthorized:
		return upstream(http.StatusBadGateway, "security", "QUBS refused the bridge's own credentials (QUBS_CLIENT_ID/QUBS_CLIENT_SECRET); an operator must fix them")
	case qubs.KindForbidden:
		fe := errNoDomain().(*fhir.Error)
		fe.Err = qe
		return fe
	case qubs.KindConflict:
		return upstream(http.StatusConflict, "conflict", "QUBS reports a conflicting earlier request with the same idempotency key")
	case qubs.KindTooLarge:
		return upstream(http.StatusRequestEntityTooLarge, "too-costly", "QUBS refused the payload as too large")
	case qubs.KindInvalid:
		title := ""
		if qe.Problem != nil && qe.Problem.Title != "" {
			title = ": " + qe.Problem.Title
		}
		return upstream(http.StatusBadGateway, "processing", "QUBS rejected the bridge's request"+title)
	case qubs.KindTransient:
		// QUBS's own answer decides first: a wait it asked for that did
		// not fit in the request's time is still QUBS turning us away,
		// not a timeout, and the client should hear when to come back.
		if qe.Status == http.StatusTooManyRequests {
			return upstream(http.StatusServiceUnavailable, "throttled", "QUBS is rate limiting the bridge; retry later")
		}
		if qe.Status == http.StatusServiceUnavailable && qe.HasRetryAfter {
			return upstream(http.StatusServiceUnavailable, "transient", "QUBS is temporarily unavailable; retry later")
		}
		if errors.Is(qe, context.DeadlineExceeded) || qe.Status == http.StatusGatewayTimeout {
			return upstream(http.StatusGatewayTimeout, "timeout", "QUBS did not answer in time")
		}
		msg := "QUBS is unavailable"
		if qe.Status != 0 {
			msg = fmt.Sprintf("QUBS answered HTTP %d", qe.Status)
		}
		return upstream(http.StatusBadGateway, "transient", msg)
	case qubs.KindExpired:
		return upstream(http.StatusBadGateway, "transient", "a QUBS presigned URL expired")
	}
	if errors.Is(qe, context.DeadlineExceeded) {
		return upstream(http.StatusGatewayTimeout, "timeout", "QUBS did not answer in time")
	}
	return upstream(http.StatusBadGateway, "exception", "unexpected answer from QUBS")
}

// defaultRetryAfter is what a throttled client is told when QUBS named no
// wait of its own.
const defaultRetryAfter = 30 * time.Second

// retryAfter tells a throttled or turned-away client when to come back:
// QUBS's own Retry-After when it gave one (in whole seconds, as RFC 9110
// §10.2.3 counts them, rounded up and at least 1, so that a client does not
// come straight back after the bridge's own retries were spent), 30 s for a
// 429 that named none.
func retryAfter(err error) string {
	var qe *qubs.Error
	if !errors.As(err, &qe) || qe.Kind != qubs.KindTransient {
		return ""
	}
	d := qe.RetryAfter
	switch {
	case qe.HasRetryAfter:
		d = max(d, time.Second)
	case qe.Status == http.StatusTooManyRequests:
		d = defaultRetryAfter
	default:
		return ""
	}
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}
