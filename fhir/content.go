package fhir

import (
	"errors"
	"mime"
	"strconv"
	"strings"
)

// ContentTypeFHIRJSON is the FHIR R4 JSON media type (R4 http.html#mime).
const ContentTypeFHIRJSON = "application/fhir+json"

// ErrNotAcceptable reports that the client asked only for formats the
// bridge does not produce (XML, Turtle, HTML...); the server answers 406.
var ErrNotAcceptable = errors.New("fhir: no acceptable response format (only JSON is produced)")

const (
	fhirJSONUTF8 = ContentTypeFHIRJSON + "; charset=utf-8"
	jsonUTF8     = "application/json; charset=utf-8"
)

// Negotiate picks the response content type from the _format parameter and
// the Accept header. _format wins over Accept, as R4 http.html#mime says, so
// a browser can ask for JSON without setting headers.
//
// JSON is the only format produced. The answer is
// "application/fhir+json; charset=utf-8", except when the client's preferred
// acceptable type is exactly application/json: some generic HTTP clients
// refuse a media type they did not ask for, and the body is the same.
// A missing Accept, */* and application/* all mean FHIR JSON. When nothing
// acceptable is named (XML, Turtle, HTML only) Negotiate returns
// ErrNotAcceptable.
func Negotiate(accept, format string) (contentType string, err error) {
	if format = strings.TrimSpace(format); format != "" {
		return negotiateFormat(format)
	}
	if strings.TrimSpace(accept) == "" {
		return fhirJSONUTF8, nil
	}
	best, bestQ, bestRank := "", 0.0, 0
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue // one malformed range must not spoil the others
		}
		q := 1.0
		if s, ok := params["q"]; ok {
			if q, err = strconv.ParseFloat(s, 64); err != nil || q < 0 || q > 1 {
				continue
			}
		}
		ct, rank := jsonRange(mt)
		if ct == "" || q == 0 {
			continue
		}
		// Higher q wins; at equal q the more specific FHIR type wins.
		if q > bestQ || (q == bestQ && rank > bestRank) {
			best, bestQ, bestRank = ct, q, rank
		}
	}
	if best == "" {
		return "", ErrNotAcceptable
	}
	return best, nil
}

// jsonRange maps an Accept media range to the content type it lets us send
// and how specific a match it is (0: not acceptable).
func jsonRange(mt string) (string, int) {
	switch mt {
	case ContentTypeFHIRJSON, "application/json+fhir": // the latter from DSTU2 clients
		return fhirJSONUTF8, 3
	case "application/json":
		return jsonUTF8, 2
	case "*/*", "application/*":
		return fhirJSONUTF8, 1
	}
	return "", 0
}

func negotiateFormat(format string) (string, error) {
	// A '+' in a query string decodes to a space, so
	// "_format=application/fhir+json" arrives as "application/fhir json".
	format = strings.ReplaceAll(format, " ", "+")
	switch strings.ToLower(format) {
	case "json":
		// R4 http.html#mime: the short form means the FHIR media type.
		return fhirJSONUTF8, nil
	}
	mt, _, err := mime.ParseMediaType(format)
	if err != nil {
		return "", ErrNotAcceptable
	}
	switch mt {
	case ContentTypeFHIRJSON, "application/json+fhir":
		return fhirJSONUTF8, nil
	case "application/json":
		return jsonUTF8, nil
	}
	return "", ErrNotAcceptable
}

// IsJSONContentType reports whether a request's Content-Type announces a
// body the server can read: application/fhir+json or application/json
// (application/json+fhir from DSTU2 clients too), with any parameters, as
// long as a charset, if given, is UTF-8 (the only encoding FHIR JSON
// allows, R4 json.html).
func IsJSONContentType(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	switch mt {
	case ContentTypeFHIRJSON, "application/json", "application/json+fhir":
	default:
		return false
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return false
	}
	return true
}
