package qubs

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies a failed QUBS call by what the caller can do about it.
type Kind int

// Error kinds. Callers match them with errors.Is(err, qubs.ErrNotFound) and
// friends, or read Error.Kind.
const (
	KindInternal     Kind = iota // a bug or an unexpected answer
	KindInvalid                  // 400/422: QUBS rejected the request as malformed
	KindUnauthorized             // 401 after one token renewal, or the token endpoint refused the credentials
	KindForbidden                // 403: domain outside the token's scope
	KindNotFound                 // 404: unknown, or not PENDING REPORTING
	KindConflict                 // 409: idempotency key reused with another payload
	KindTooLarge                 // 413, or a payload refused before sending for being too large
	KindExpired                  // a presigned URL that has expired
	KindTransient                // 429, 5xx, transport errors and timeouts, after retries ran out
)

var kindNames = [...]string{"internal", "invalid", "unauthorized", "forbidden", "not found", "conflict", "too large", "expired", "transient"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Sentinels for errors.Is; an *Error matches the sentinel of its Kind.
var (
	ErrInvalid      = &Error{Kind: KindInvalid}
	ErrUnauthorized = &Error{Kind: KindUnauthorized}
	ErrForbidden    = &Error{Kind: KindForbidden}
	ErrNotFound     = &Error{Kind: KindNotFound}
	ErrConflict     = &Error{Kind: KindConflict}
	ErrTooLarge     = &Error{Kind: KindTooLarge}
	ErrExpired      = &Error{Kind: KindExpired}
	ErrTransient    = &Error{Kind: KindTransient}
)

// Error is every error the client returns for a failed call. Its message
// never holds request or response bodies beyond the problem's title, so it
// is safe to log: QUBS problem details may echo PHI and are kept in Problem
// for the caller to decide.
type Error struct {
	Kind Kind
	// Op names the operation, for example "qubs.SubmitReport".
	Op string
	// Status is the HTTP status QUBS answered, 0 when there was no answer.
	Status int
	// Problem is the decoded RFC 7807 body, nil when QUBS sent none.
	Problem *Problem
	// RequestID is the problem's requestId, when QUBS sent one.
	RequestID string
	// CorrelationID is the X-Correlation-Id QUBS echoed (or the one sent).
	CorrelationID string
	// Err is the underlying cause, if any (transport error, decode error).
	Err error
	// RetryAfter is the wait QUBS asked for in its last answer's
	// Retry-After header (HasRetryAfter says whether it named one); the
	// bridge passes it on to its own clients.
	RetryAfter    time.Duration
	HasRetryAfter bool
}

func (e *Error) Error() string {
	msg := e.Op
	if msg == "" {
		msg = "qubs"
	}
	msg += ": " + e.Kind.String()
	if e.Status != 0 {
		msg += fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	if e.Problem != nil && e.Problem.Title != "" {
		msg += ": " + e.Problem.Title
	}
	if e.RequestID != "" {
		msg += " requestId=" + e.RequestID
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches the sentinel of the same kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Op == "" && t.Status == 0 && t.Err == nil && t.Kind == e.Kind
}

// KindOf returns the kind of err, KindInternal when err is not an *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}
