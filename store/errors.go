package store

import (
	"errors"
	"fmt"
)

// Kind classifies a failed store call by what the caller can do about it.
type Kind int

// Error kinds. Callers match them with errors.Is(err, store.ErrNotFound) and
// friends, or read Error.Kind. Anything that is not one of these (a dropped
// connection, a full disk, a cancelled context) is KindInternal; its Err
// keeps the cause, so errors.Is(err, context.Canceled) still works.
const (
	KindInternal     Kind = iota // a bug, a broken database, a cancelled context
	KindNotFound                 // no such resource (or version, or no due delivery job)
	KindConflict                 // the id or key exists already, or a job is no longer in the state the call needs
	KindPrecondition             // If-Match (the expected version) does not match the current version
	KindInvalid                  // the caller passed something unusable: a missing id, a malformed cursor
)

var kindNames = [...]string{"internal", "not found", "conflict", "precondition failed", "invalid"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Sentinels for errors.Is; an *Error matches the sentinel of its Kind.
var (
	ErrNotFound     = &Error{Kind: KindNotFound}
	ErrConflict     = &Error{Kind: KindConflict}
	ErrPrecondition = &Error{Kind: KindPrecondition}
	ErrInvalid      = &Error{Kind: KindInvalid}
)

// Error is every error a Store returns. Its message holds the operation, the
// kind and identifiers (domain, resource id, version) but never resource
// bodies, so it is safe to log.
type Error struct {
	Kind Kind
	// Op names the operation and its identifiers, for example
	// `sqlite.UpdateReport("acme", "r1")`.
	Op string
	// Err is the underlying cause, if any.
	Err error
}

// E builds an *Error of kind with a cause; format and args, when given,
// become the cause's message (no PHI in them, please).
func E(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Err: fmt.Errorf(format, args...)}
}

func (e *Error) Error() string {
	msg := e.Op
	if msg == "" {
		msg = "store"
	}
	msg += ": " + e.Kind.String()
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is matches the sentinel of the same kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Op == "" && t.Err == nil && t.Kind == e.Kind
}

// KindOf returns the kind of err, KindInternal when err is not an *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// Wrap gives *errp, when it is not nil, the operation name op: an *Error
// without an Op gets it, anything else becomes a KindInternal *Error with
// *errp as its cause. Implementations call it deferred:
//
//	defer store.Wrap(&err, "sqlite.Report(%q, %q)", domain, id)
func Wrap(errp *error, format string, args ...any) {
	if *errp == nil {
		return
	}
	op := fmt.Sprintf(format, args...)
	var e *Error
	if errors.As(*errp, &e) && e.Op == "" {
		// Copy so that a sentinel returned by mistake is never mutated.
		c := *e
		c.Op = op
		*errp = &c
		return
	}
	if errors.As(*errp, &e) {
		return
	}
	*errp = &Error{Kind: KindInternal, Op: op, Err: *errp}
}
