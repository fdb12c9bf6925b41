package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// readResource reads a FHIR JSON body and runs the strict R4 validation on
// it before anything else looks at it: a wrong media type is 415, a body
// that is not valid R4 of the expected type is 400 with one issue per
// problem and its element path.
func (s *Server) readResource(c *gin.Context, typ string) ([]byte, error) {
	if !fhir.IsJSONContentType(c.GetHeader("Content-Type")) {
		return nil, fhir.Errorf(http.StatusUnsupportedMediaType, "not-supported",
			"send %s as application/fhir+json", typ)
	}
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		return nil, fhir.Errorf(http.StatusBadRequest, "structure", "reading the request body failed")
	}
	if len(body) == 0 {
		return nil, fhir.Errorf(http.StatusBadRequest, "required", "the request has no body")
	}
	if err := checkDuplicateMembers(body); err != nil {
		return nil, err
	}
	if issues := s.validator.ValidateType(body, typ); len(issues) > 0 {
		return nil, &fhir.Error{Status: http.StatusBadRequest, Issues: issues}
	}
	return body, nil
}

// Bounds of the values readStreamed decodes: the largest artifact and the
// largest report text (with a byte order mark) QUBS takes, so the mapping
// can tell "too large" for both; and the raw base64 kept as sent, so a
// small value (report text) is stored byte for byte.
const (
	inlineLimit = max(qubs.MaxUploadBytes, qubs.MaxReportTextBytes+3)
	keepRaw     = 64 << 10
)

// streamed is a resource read once by readStreamed.
type streamed struct {
	sp *fhir.Spooled
	// view is the resource with its base64 values taken out replaced by
	// stand-ins, as the validator and the mapping see it (the mapping takes
	// the decoded values from inline).
	view []byte
	// sum is the hex SHA-256 of the body as sent ("" unless asked for).
	sum string
}

// inline returns the decoded values by element index, for the mapping.
func (r *streamed) inline() map[int]*mapping.InlineData {
	m := make(map[int]*mapping.InlineData, len(r.sp.Inline))
	for _, d := range r.sp.Inline {
		m[d.Index] = &mapping.InlineData{Data: d.Data, Invalid: d.Invalid, TooBig: d.TooBig}
	}
	return m
}

// digests returns the SHA-1 and SHA-256 of data computed while it was
// decoded, when data is a value readStreamed decoded (the same bytes, not
// a copy); ok is false otherwise.
func (r *streamed) digests(data []byte) (sha1, sha256 []byte, ok bool) {
	for _, d := range r.sp.Inline {
		if d.Hashed && len(d.Data) == len(data) && (len(data) == 0 || &d.Data[0] == &data[0]) {
			return d.SHA1[:], d.SHA256[:], true
		}
	}
	return nil, nil, false
}

// standIn is what the validator sees of a value taken out: the value
// itself when it was small enough to keep, else one that validates as the
// value would (base64 or not); the mapping judges size and content.
func standIn(d *fhir.InlineData) []byte {
	switch {
	case d.Raw != nil:
		return d.Raw
	case d.Invalid:
		return []byte(`"*"`)
	}
	return []byte(`"AA=="`)
}

// readStreamed is readResource for resources that carry files: it reads
// the body once, decoding the base64 data of array[*] (or of the resource,
// for array "") as it goes, and validates the rest strictly. A 2 MiB PDF
// is then held once, decoded, instead of being parsed as 2.8 MB of JSON
// text by each step.
//
// The body's digest (streamed.sum) is computed only when needHash: it is
// the idempotency key of a create without Idempotency-Key, and nothing else.
func (s *Server) readStreamed(c *gin.Context, typ, array string, needHash bool) (*streamed, error) {
	if !fhir.IsJSONContentType(c.GetHeader("Content-Type")) {
		return nil, fhir.Errorf(http.StatusUnsupportedMediaType, "not-supported",
			"send %s as application/fhir+json", typ)
	}
	sp, err := fhir.SpoolInline(c.Request.Body, fhir.SpoolOptions{Array: array, MaxDecoded: inlineLimit, KeepRaw: keepRaw, SizeHint: c.Request.ContentLength, SkipHash: !needHash,
		HashValues: array != ""})
	var (
		mbe *http.MaxBytesError
		fe  *fhir.Error
	)
	switch {
	case errors.As(err, &mbe), errors.As(err, &fe):
		return nil, err
	case errors.Is(err, fhir.ErrEmpty):
		return nil, fhir.Errorf(http.StatusBadRequest, "required", "the request has no body")
	case errors.Is(err, fhir.ErrSyntax):
		// Where it broke, never what it held (fhir.SyntaxError).
		return nil, &fhir.Error{Status: http.StatusBadRequest, Issues: []fhir.Issue{{Severity: "error", Code: "structure",
			Details: "invalid JSON", Diagnostics: err.Error()}}}
	case err != nil:
		return nil, fhir.Errorf(http.StatusBadRequest, "structure", "reading the request body failed")
	}
	r := &streamed{sp: sp, view: sp.Fill(standIn)}
	if needHash {
		r.sum = hex.EncodeToString(sp.SHA256[:])
	}
	if issues := s.validator.ValidateType(r.view, typ); len(issues) > 0 {
		return nil, &fhir.Error{Status: http.StatusBadRequest, Issues: issues}
	}
	return r, nil
}

// mappingError turns the issues found while mapping an inbound resource to
// QUBS into one error. The status is the gravest the issues call for: a
// value that cannot be read (400) before content over a QUBS limit (413)
// before a readable resource the bridge cannot accept (422).
func mappingError(issues []mapping.Issue) error {
	if len(issues) == 0 {
		return nil
	}
	status := 0
	out := make([]fhir.Issue, len(issues))
	for i, is := range issues {
		out[i] = fhir.Issue{Severity: "error", Code: is.Code, Diagnostics: is.Message, Details: is.Message}
		if is.Expression != "" {
			out[i].Expression = []string{is.Expression}
		}
		status = graver(status, is.Status)
	}
	return &fhir.Error{Status: status, Issues: out}
}

func graver(a, b int) int {
	rank := func(s int) int {
		switch s {
		case http.StatusBadRequest:
			return 3
		case http.StatusRequestEntityTooLarge:
			return 2
		case 0:
			return 0
		}
		return 1
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// appointmentGone is the answer when a write names an appointment QUBS no
// longer has pending reporting.
func appointmentGone(expr string) error {
	return &fhir.Error{Status: http.StatusUnprocessableEntity, Issues: []fhir.Issue{{
		Severity: "error", Code: "business-rule", Expression: []string{expr},
		Diagnostics: "the appointment is not pending reporting in QUBS (unknown, or already reported and closed)",
	}}}
}

// checkPending asks QUBS whether the appointment still awaits reporting.
// ok is false only when QUBS said so; when QUBS cannot be asked, the write
// is accepted and delivery finds out (the point of the store is to accept
// reports while QUBS is down).
func (s *Server) checkPending(c *gin.Context, appointmentID string) (appt *qubs.Appointment, ok bool, err error) {
	a, err := s.cfg.QUBS.GetPending(c.Request.Context(), domainOf(c), appointmentID)
	switch qubs.KindOf(err) {
	case qubs.KindNotFound:
		return nil, false, nil
	case qubs.KindTransient:
		s.log.Info("accepting without checking the appointment: QUBS unavailable", "correlation_id", correlationIDOf(c))
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	return a, true, nil
}

// clientKey is what makes a client's write idempotent: its Idempotency-Key
// header, else the hash of what it sent. kind says which, for the answer
// to a replay (an idempotent replay repeats the original 201; the same
// content again answers 200 with what it made).
type clientKey struct {
	kind string // "idempotency-key", "content"
	key  string
}

func idempotencyKey(c *gin.Context, body []byte) (clientKey, error) {
	return idempotencyKeyOr(c, hashHex(body))
}

// idempotencyKeyOr is idempotencyKey with the content's hash given.
func idempotencyKeyOr(c *gin.Context, contentHash string) (clientKey, error) {
	if k := c.GetHeader("Idempotency-Key"); k != "" {
		if err := qubs.ValidateIdempotencyKey(k); err != nil {
			return clientKey{}, fhir.Errorf(http.StatusBadRequest, "value",
				"Idempotency-Key must be 1 to 128 printable ASCII characters")
		}
		return clientKey{kind: "idempotency-key", key: k}, nil
	}
	return clientKey{kind: "content", key: contentHash}, nil
}

func hashHex(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// qubsKey derives the Idempotency-Key the bridge sends to QUBS from the
// client's key, so that a retry by the client, by the bridge or by another
// replica sends QUBS the same key.
func qubsKey(scope, domain string, k clientKey) string {
	return qubs.DeriveIdempotencyKey(scope, []byte(domain), []byte(k.kind), []byte(k.key))
}

// etag and version parsing for If-Match (FHIR: W/"vid").
func etag(version int) string { return `W/"` + strconv.Itoa(version) + `"` }

func parseIfMatch(h string) (int, error) {
	if h == "" {
		return 0, nil
	}
	v := strings.TrimPrefix(strings.TrimSpace(h), "W/")
	v = strings.Trim(v, `"`)
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fhir.Errorf(http.StatusBadRequest, "value", `If-Match must be a version ETag such as W/"3"`)
	}
	return n, nil
}

// preferReturn reads Prefer: return=minimal|representation|OperationOutcome.
func preferReturn(c *gin.Context) string {
	for _, p := range strings.Split(c.GetHeader("Prefer"), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok && strings.EqualFold(k, "return") {
			switch v = strings.Trim(v, `"`); v {
			case "minimal", "representation", "OperationOutcome":
				return v
			}
		}
	}
	return "representation"
}

// respondWrite answers a create or update: Location, ETag and
// Last-Modified always, then the body Prefer asks for.
func (s *Server) respondWrite(c *gin.Context, status int, location string, version int, modified time.Time, body []byte, note string) {
	c.Header("Location", location)
	if version > 0 {
		c.Header("ETag", etag(version))
	}
	if !modified.IsZero() {
		c.Header("Last-Modified", modified.UTC().Format(http.TimeFormat))
	}
	switch preferReturn(c) {
	case "minimal":
		c.Status(status)
	case "OperationOutcome":
		s.write(c, status, fhir.NewOutcome(fhir.Issue{Severity: "information", Code: "informational", Diagnostics: note}))
	default:
		s.writeRaw(c, status, body)
	}
}

// referenceIDs returns the ids of every reference in the named search
// parameters (each a comma-separated list of alternatives), refusing
// references to any type but typ.
func referenceIDs(q *fhir.Query, typ string, names ...string) ([]string, error) {
	groups, err := referenceGroups(q, typ, names...)
	return slices.Concat(groups...), err
}

// referenceGroups is referenceIDs with the ids of each occurrence of a
// parameter kept apart: a search must match one id of every group, as
// R4 search.html#combining ANDs parameters and ORs a comma's values.
func referenceGroups(q *fhir.Query, typ string, names ...string) ([][]string, error) {
	var groups [][]string
	for _, name := range names {
		for _, v := range q.Params[name] {
			var ids []string
			for _, r := range fhir.SplitValues(v) {
				t, id, err := fhir.ParseReference(r, typ)
				if err != nil {
					return nil, err
				}
				if t != typ {
					return nil, fhir.Errorf(http.StatusBadRequest, "value", "%s must reference a %s", name, typ)
				}
				ids = append(ids, id)
			}
			groups = append(groups, ids)
		}
	}
	return groups, nil
}

// decodeResource decodes a body the validator already accepted into a
// samply model.
func decodeResource(body []byte, v any, typ string) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fhir.Errorf(http.StatusBadRequest, "structure", "the %s does not decode", typ)
	}
	return nil
}

// checkDuplicateMembers refuses a JSON object with the same member twice
// (after unescaping, so "a" and "\u0061" are one name). RFC 8259 leaves
// the meaning to the parser, and parsers differ: the strict validator and
// the mapping could read different values, and the one sent to QUBS would
// be an accident.
func checkDuplicateMembers(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]bool
		expect bool // the next string token in an object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return nil // malformed JSON is the validator's to report
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				if top != nil && top.object {
					top.expect = true
				}
				stack = append(stack, &frame{object: true, keys: map[string]bool{}, expect: true})
			case '[':
				if top != nil && top.object {
					top.expect = true
				}
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
			}
		case string:
			if top != nil && top.object && top.expect {
				if top.keys[t] {
					return fhir.Errorf(http.StatusBadRequest, "structure", "a JSON object has the member %q twice", t)
				}
				top.keys[t] = true
				top.expect = false
				continue
			}
			if top != nil && top.object {
				top.expect = true
			}
		default:
			if top != nil && top.object {
				top.expect = true
			}
		}
	}
}

// readInbound reads a create's body, validates it strictly as typ and
// decodes it into the samply model T. These creates are not conditional:
// only DiagnosticReport and Subscription evaluate If-None-Exist, so elsewhere the header is
// refused rather than ignored.
func readInbound[T any](s *Server, c *gin.Context, typ string) ([]byte, *T, error) {
	if c.GetHeader("If-None-Exist") != "" {
		return nil, nil, fhir.Errorf(http.StatusBadRequest, "not-supported",
			"conditional create (If-None-Exist) is offered for DiagnosticReport and Subscription only; use Idempotency-Key")
	}
	body, err := s.readResource(c, typ)
	if err != nil {
		return nil, nil, err
	}
	m := new(T)
	if err := decodeResource(body, m, typ); err != nil {
		return nil, nil, err
	}
	return body, m, nil
}

// writeTarget checks the study a synchronous write (a comment, a
// document) goes to, before QUBS is asked to change anything: what it
// creates must be servable under a FHIR id (recordID), the appointment
// must still be pending, and the client's subject, if any, must be its
// patient. appt is nil when QUBS could not be asked.
func (s *Server) writeTarget(c *gin.Context, appointmentID, patientID, expr string, recordID func(string, string) (string, error)) (*qubs.Appointment, error) {
	if _, err := recordID(appointmentID, probeGUID); err != nil {
		return nil, unservable(expr)
	}
	a, ok, err := s.checkPending(c, appointmentID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, appointmentGone(expr)
	}
	if _, err := s.patientRef(a, patientID, strings.SplitN(expr, ".", 2)[0]+".subject"); err != nil {
		return nil, err
	}
	return a, nil
}
