package qubssim

import (
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"net/http"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// problemTypes are the RFC 7807 type URIs, in the style ASP.NET Core emits
// (the RFC 9110 section of the status), since QUBS documents none.
var problemTypes = map[int]string{
	400: "https://tools.ietf.org/html/rfc9110#section-15.5.1",
	401: "https://tools.ietf.org/html/rfc9110#section-15.5.2",
	403: "https://tools.ietf.org/html/rfc9110#section-15.5.4",
	404: "https://tools.ietf.org/html/rfc9110#section-15.5.5",
	405: "https://tools.ietf.org/html/rfc9110#section-15.5.6",
	408: "https://tools.ietf.org/html/rfc9110#section-15.5.9",
	409: "https://tools.ietf.org/html/rfc9110#section-15.5.10",
	411: "https://tools.ietf.org/html/rfc9110#section-15.5.12",
	413: "https://tools.ietf.org/html/rfc9110#section-15.5.14",
	415: "https://tools.ietf.org/html/rfc9110#section-15.5.16",
	422: "https://tools.ietf.org/html/rfc9110#section-15.5.21",
	429: "https://tools.ietf.org/html/rfc6585#section-4",
	500: "https://tools.ietf.org/html/rfc9110#section-15.6.1",
	502: "https://tools.ietf.org/html/rfc9110#section-15.6.3",
	503: "https://tools.ietf.org/html/rfc9110#section-15.6.4",
	504: "https://tools.ietf.org/html/rfc9110#section-15.6.5",
}

const (
	contentTypeJSON    = "application/json; charset=utf-8"
	contentTypeProblem = "application/problem+json; charset=utf-8"
)

// problem answers an RFC 7807 problem. detail never holds PHI: it names
// fields and rules, never values.
func (s *Sim) problem(w http.ResponseWriter, r *http.Request, status int, detail string) {
	typ := problemTypes[status]
	if typ == "" {
		typ = "about:blank"
	}
	title := http.StatusText(status)
	if title == "" {
		title = "Error"
	}
	p := qubs.Problem{
		Type:      typ,
		Title:     title,
		Status:    status,
		Detail:    detail,
		Instance:  r.URL.Path,
		RequestID: info(r).id,
	}
	body, _ := json.Marshal(p)
	w.Header().Set("Content-Type", contentTypeProblem)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeJSON answers v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only the simulator's own types are marshalled here.
		panic(err)
	}
	writeBody(w, status, body)
}

// writeBody answers a JSON body.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", contentTypeJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// s3Error is the XML error body of an S3-compatible object store, which is
// what stands behind real presigned URLs.
type s3Error struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string   `xml:"Code"`
	Message   string   `xml:"Message"`
	RequestID string   `xml:"RequestId"`
}

func s3Fail(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	body, _ := xml.Marshal(s3Error{Code: code, Message: msg, RequestID: info(r).id})
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
}

// seal encrypts and authenticates v into an opaque, URL-safe token bound to
// purpose (and whatever else purpose names, such as the domain), so a token
// can be neither read, forged, altered nor used for another purpose.
func (s *Sim) seal(purpose string, v any) string {
	pt, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	nonce := randomBytes(s.aead.NonceSize())
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, pt, []byte(purpose)))
}

var errBadToken = errors.New("invalid token")

// unseal opens a token made by seal with the same purpose.
func (s *Sim) unseal(purpose, tok string, v any) error {
	// Strict: a token whose last character was changed only in the bits
	// base64 leaves unused is another token, refused like any forgery.
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	if err != nil || len(b) < s.aead.NonceSize()+s.aead.Overhead() {
		return errBadToken
	}
	n := s.aead.NonceSize()
	pt, err := s.aead.Open(nil, b[:n], b[n:], []byte(purpose))
	if err != nil {
		return errBadToken
	}
	if json.Unmarshal(pt, v) != nil {
		return errBadToken
	}
	return nil
}
