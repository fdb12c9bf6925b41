package auth

import (
	"errors"
	"net/http"
	"strings"
)

// RFC 6750 §3.1 error codes.
const (
	CodeInvalidRequest    = "invalid_request"
	CodeInvalidToken      = "invalid_token"
	CodeInsufficientScope = "insufficient_scope"
)

// Realm is the realm of every Bearer challenge the bridge sends.
const Realm = "qubs-fhir-bridge"

// Error is an authentication or authorization failure, ready for the
// response: the HTTP status, the RFC 6750 error code and a description that
// is free of PHI and of credentials (fixed texts only), so it may be logged
// and returned to the client.
type Error struct {
	// Status is 401 (no or bad credentials), 403 (insufficient_scope) or
	// 400 (invalid_request: a malformed Authorization header, RFC 6750 §3.1).
	Status int
	// Code is invalid_token, insufficient_scope or invalid_request; empty
	// when the request carried no bearer credentials at all, because RFC 6750
	// §3.1 says the challenge should then carry no error code.
	Code string
	// Description is a fixed, PHI-free explanation.
	Description string
	// Scope, for insufficient_scope, is a scope that would have allowed the
	// request; it goes into the challenge's scope attribute.
	Scope string
}

// Error returns "auth: <code>: <description>", safe to log.
func (e *Error) Error() string {
	code := e.Code
	if code == "" {
		code = "unauthenticated"
	}
	return "auth: " + code + ": " + e.Description
}

// WWWAuthenticate returns the WWW-Authenticate header value for the error
// (RFC 6750 §3), for example
//
//	Bearer realm="qubs-fhir-bridge", error="invalid_token", error_description="token expired"
func (e *Error) WWWAuthenticate() string {
	var b strings.Builder
	b.WriteString(`Bearer realm="` + Realm + `"`)
	if e.Code != "" {
		b.WriteString(`, error="` + quoteSafe(e.Code) + `"`)
		if e.Description != "" {
			b.WriteString(`, error_description="` + quoteSafe(e.Description) + `"`)
		}
		if e.Scope != "" {
			b.WriteString(`, scope="` + quoteSafe(e.Scope) + `"`)
		}
	}
	return b.String()
}

// WriteError writes err as the response to a protected-resource request: the
// status, the WWW-Authenticate challenge and a short plain-text body. The
// server renders its own OperationOutcome instead; this is for plain
// net/http users and tests. Errors other than *Error become 500.
func WriteError(w http.ResponseWriter, err error) {
	var ae *Error
	if !errors.As(err, &ae) {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("WWW-Authenticate", ae.WWWAuthenticate())
	http.Error(w, ae.Error(), ae.Status)
}

// quoteSafe keeps only the characters RFC 6750 §3 allows in error,
// error_description and scope values (%x20-21 / %x23-5B / %x5D-7E), so a
// value can never break out of its quoted string.
func quoteSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}

func invalidToken(desc string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: CodeInvalidToken, Description: desc}
}
