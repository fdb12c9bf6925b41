package auth

import (
	"net/http"
	"strings"
)

// Authenticator turns a request's credentials into a Principal. It reads
// the Authorization: Bearer header; on failure it returns an *Error (401 or
// 400). It does not check domains or scopes: the server calls
// Principal.CheckDomain and Principal.Check for that.
type Authenticator interface {
	Authenticate(r *http.Request) (*Principal, error)
}

// maxTokenLen bounds a bearer token. Real access tokens are a few KiB at
// most; refusing longer ones early keeps parsing cheap for attackers' input.
const maxTokenLen = 16 << 10

// BearerToken extracts the token from an Authorization header value,
// strictly per RFC 6750 §2.1: the scheme "Bearer" (case-insensitive, RFC 7235
// §2.1), exactly one space, then a b64token
// (1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="). It returns
// an *Error: 401 without an error code when there is no header or another
// scheme (the client must be told to use Bearer), 400 invalid_request when
// the Bearer credentials are malformed.
func BearerToken(h string) (string, error) {
	if h == "" {
		return "", &Error{Status: http.StatusUnauthorized, Description: "bearer token required"}
	}
	scheme, tok, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", &Error{Status: http.StatusUnauthorized, Description: "bearer token required"}
	}
	if tok == "" {
		return "", malformed("missing token after Bearer")
	}
	if len(tok) > maxTokenLen {
		return "", malformed("token too long")
	}
	if !isB64Token(tok) {
		return "", malformed("token is not a b64token (RFC 6750 section 2.1)")
	}
	return tok, nil
}

func malformed(desc string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: "malformed Authorization header: " + desc}
}

func isB64Token(s string) bool {
	i := 0
	for i < len(s) {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' {
			i++
			continue
		}
		break
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// requestToken reads the bearer token of r. Several Authorization headers
// are refused: RFC 6750 §3.1 treats more than one credential as
// invalid_request, and picking one would let a proxy and the bridge disagree.
func requestToken(r *http.Request) (string, error) {
	hs := r.Header.Values("Authorization")
	if len(hs) > 1 {
		return "", malformed("more than one Authorization header")
	}
	if len(hs) == 0 {
		return BearerToken("")
	}
	return BearerToken(hs[0])
}
