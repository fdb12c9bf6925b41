package mapping

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"mime"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// Issue is one problem with a resource a client sent, found while mapping
// it to QUBS. The inbound functions collect every issue rather than stop
// at the first, so a client can fix them all in one round.
//
// Message never quotes what the client sent: it names the rule broken, so
// it is safe to log. The server turns issues into OperationOutcome issues
// (code, expression, details) and picks the HTTP status from Status.
type Issue struct {
	// Code is an R4 issue-type code: structure, required, value,
	// code-invalid, invalid, not-supported or too-costly.
	Code string
	// Status is the HTTP status this issue calls for: 400 for a value that
	// cannot be read (bad base64, a body that is not the resource), 413 for
	// content over a QUBS size limit, 422 for a readable resource the
	// bridge cannot accept. 415 is not used: the request's own media type
	// (FHIR JSON) is fine when an embedded attachment's is not, and a 415
	// would send the client looking at the wrong Content-Type.
	Status int
	// Expression is the FHIRPath of the offending element, e.g.
	// "DiagnosticReport.presentedForm[2].contentType".
	Expression string
	// Message says what is wrong, free of patient data.
	Message string
}

func (i Issue) String() string {
	return fmt.Sprintf("%s (%s, HTTP %d): %s", i.Expression, i.Code, i.Status, i.Message)
}

// Issue codes used here (R4 issue-type).
const (
	codeStructure    = "structure"
	codeRequired     = "required"
	codeValue        = "value"
	codeCodeInvalid  = "code-invalid"
	codeInvalid      = "invalid"
	codeNotSupported = "not-supported"
	codeTooCostly    = "too-costly"
)

// issues collects Issues.
type issues []Issue

func (is *issues) add(code string, status int, expr, format string, args ...any) {
	*is = append(*is, Issue{Code: code, Status: status, Expression: expr, Message: fmt.Sprintf(format, args...)})
}

func idx(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// literal is a parsed literal reference.
type literal struct {
	// base is what precedes "Type/id" in an absolute reference, ending in
	// "/"; "" for a relative one.
	base string
	typ  string
	id   string
}

// parseLiteral reads a literal reference (R4 references.html#literal):
// "Type/id" or an absolute http(s) URL ending in "/Type/id", either
// optionally followed by "/_history/vid", which is dropped (QUBS has no
// versions). Contained ("#id"), conditional ("Type?...") and other
// references are not literal.
func parseLiteral(ref string) (literal, bool) {
	if ref == "" || strings.ContainsAny(ref, "?#") || strings.ContainsFunc(ref, unicode.IsSpace) {
		return literal{}, false
	}
	segs := strings.Split(ref, "/")
	if n := len(segs); n >= 4 && segs[n-2] == "_history" && validID(segs[n-1]) {
		segs = segs[:n-2]
	}
	n := len(segs)
	if n < 2 || !resourceType(segs[n-2]) || !validID(segs[n-1]) {
		return literal{}, false
	}
	l := literal{typ: segs[n-2], id: segs[n-1]}
	if n > 2 {
		l.base = strings.Join(segs[:n-2], "/") + "/"
		lower := strings.ToLower(l.base)
		if !strings.HasPrefix(lower, "http://") && !strings.HasPrefix(lower, "https://") || len(l.base) <= len("https://") {
			return literal{}, false
		}
	}
	return l, true
}

// resourceType reports whether s looks like a resource type name: an
// upper-case ASCII letter and ASCII letters.
func resourceType(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i] | 0x20; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// appointmentFrom finds the one ServiceRequest among refs (basedOn, or
// context.related) and returns the QUBS appointment id behind it. Other
// resource types are ignored: they stay in the resource the bridge stores
// but mean nothing to QUBS. A ServiceRequest id is accepted only in the
// canonical form the bridge issues (ServiceRequestID(DecodeID(id)) == id),
// so each appointment has exactly one reference.
func appointmentFrom(refs []fhir.Reference, path string, is *issues) string {
	var found []string // appointment ids, "" for a ServiceRequest reference that failed
	for i, r := range refs {
		ref, typ := val(r.Reference), val(r.Type)
		p := idx(path, i)
		l, ok := parseLiteral(ref)
		switch {
		case ok && l.typ != "ServiceRequest":
			if typ == "ServiceRequest" {
				is.add(codeValue, 422, p+".type", "Reference.type ServiceRequest contradicts the reference")
				found = append(found, "")
			}
			continue
		case !ok && typ != "ServiceRequest" && !strings.Contains(ref, "ServiceRequest"):
			continue // not a ServiceRequest at all
		case !ok:
			is.add(codeValue, 422, p+".reference", "the ServiceRequest must be a literal reference ServiceRequest/{id}, relative or absolute")
			found = append(found, "")
			continue
		}
		if typ != "" && typ != l.typ {
			is.add(codeValue, 422, p+".type", "Reference.type contradicts the reference")
		}
		appt, err := DecodeID(l.id)
		if enc, encErr := ServiceRequestID(appt); err != nil || encErr != nil || enc != l.id {
			is.add(codeValue, 422, p+".reference", "not a ServiceRequest id this server issued")
			found = append(found, "")
			continue
		}
		found = append(found, appt)
	}
	switch {
	case len(found) == 0:
		is.add(codeRequired, 422, path, "a reference to the ServiceRequest (the QUBS appointment) is required")
		return ""
	case len(found) > 1:
		is.add(codeNotSupported, 422, path, "exactly one ServiceRequest reference is allowed: one QUBS appointment per resource")
		return ""
	}
	return found[0]
}

// patientFrom reads an optional subject, which must be a literal
// reference to a Patient; it returns the Patient id, "" when absent.
func patientFrom(r *fhir.Reference, path string, is *issues) string {
	if r == nil {
		return ""
	}
	l, ok := parseLiteral(val(r.Reference))
	switch {
	case !ok:
		is.add(codeValue, 422, path+".reference", "subject must be a literal reference Patient/{id}")
		return ""
	case l.typ != "Patient":
		is.add(codeValue, 422, path+".reference", "subject must be a Patient")
		return ""
	case r.Type != nil && *r.Type != "Patient":
		is.add(codeValue, 422, path+".type", "Reference.type contradicts the reference")
		return ""
	}
	return l.id
}

// decodeBase64 decodes a FHIR base64Binary (R4 allows whitespace between
// quads) of at most limit decoded bytes. A longer value is reported with
// tooBig and not decoded: an oversized attachment costs no allocation.
func decodeBase64(s string, limit int) (b []byte, tooBig bool, err error) {
	if strings.ContainsAny(s, " \t\r\n") {
		s = strings.Map(func(r rune) rune {
			if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
				return -1
			}
			return r
		}, s)
	}
	if len(s)%4 != 0 {
		return nil, false, fmt.Errorf("base64 length is not a multiple of 4")
	}
	n := len(s) / 4 * 3
	if strings.HasSuffix(s, "==") {
		n -= 2
	} else if strings.HasSuffix(s, "=") {
		n--
	}
	if n > limit {
		return nil, true, nil
	}
	b, err = base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, false, fmt.Errorf("malformed base64")
	}
	return b, false, nil
}

// checkIntegrity compares inline data with the attachment's size and hash
// when the client gave them (R4 Attachment.size, Attachment.hash: base64 of
// the SHA-1), so a truncated or altered upload is refused, not delivered.
func checkIntegrity(att fhir.Attachment, data []byte, path string, is *issues) {
	if att.Size != nil && *att.Size != len(data) {
		is.add(codeValue, 422, path+".size", "size does not match the decoded data")
	}
	if att.Hash != nil {
		want, _, err := decodeBase64(*att.Hash, 64)
		switch {
		case err != nil || len(want) != sha1.Size:
			is.add(codeValue, 400, path+".hash", "hash must be the base64 of a SHA-1 digest (20 bytes)")
		default:
			if got := sha1.Sum(data); !bytes.Equal(got[:], want) {
				is.add(codeValue, 422, path+".hash", "hash does not match the SHA-1 of the decoded data")
			}
		}
	}
}

// mediaType parses Attachment.contentType: the lower-case type/subtype and
// its parameters.
func mediaType(att fhir.Attachment, path string, is *issues) (string, map[string]string, bool) {
	if att.ContentType == nil || strings.TrimSpace(*att.ContentType) == "" {
		is.add(codeRequired, 422, path+".contentType", "contentType is required")
		return "", nil, false
	}
	mt, params, err := mime.ParseMediaType(*att.ContentType)
	if err != nil {
		is.add(codeValue, 422, path+".contentType", "contentType is not a media type")
		return "", nil, false
	}
	return mt, params, true
}

// artifactExt is the file extension the bridge gives each artifact type.
// QUBS stores no content type for attachments: the bridge derives it from
// the file name on the way back (ContentTypeForFileName), so the name must
// carry the right extension.
var artifactExt = map[string]string{qubs.ContentTypePDF: ".pdf", qubs.ContentTypeDICOM: ".dcm"}

// InlineData is an attachment's data decoded by the server while it read
// the request (so that a 2 MiB artifact is never held as base64 text):
// the mapping takes it in place of Attachment.data, which then only has
// to be present.
type InlineData struct {
	// Data is the decoded data; nil when Invalid or TooBig.
	Data []byte
	// Invalid: not base64. TooBig: over the limit the server decoded to,
	// which must be at least the largest the mapping accepts.
	Invalid, TooBig bool
}

// attachmentData decodes Attachment.data, or takes inl when the server
// decoded it already, as decodeBase64 does.
func attachmentData(att fhir.Attachment, inl *InlineData, limit int) ([]byte, bool, error) {
	if inl == nil {
		return decodeBase64(*att.Data, limit)
	}
	switch {
	case inl.TooBig || len(inl.Data) > limit:
		return nil, true, nil
	case inl.Invalid:
		return nil, false, fmt.Errorf("malformed base64")
	}
	return inl.Data, false, nil
}

// artifact reads one PDF or DICOM attachment: inline data or a url to a
// Binary. ordinal (1-based) names the artifact when it has no title.
func artifact(att fhir.Attachment, contentType string, index, ordinal int, path string, is *issues) ArtifactInput {
	return artifactFrom(att, nil, contentType, index, ordinal, path, is)
}

// artifactFrom is artifact with the data decoded already (inl), if not nil.
func artifactFrom(att fhir.Attachment, inl *InlineData, contentType string, index, ordinal int, path string, is *issues) ArtifactInput {
	a := ArtifactInput{Index: index, ContentType: contentType, FileName: artifactFileName(val(att.Title), contentType, ordinal)}
	switch {
	case att.Data != nil:
		// Data wins over url: R4 allows both, url then being where the
		// same bytes can be found.
		data, tooBig, err := attachmentData(att, inl, qubs.MaxUploadBytes)
		switch {
		case tooBig:
			is.add(codeTooCostly, 413, path+".data", "an artifact may be at most %d bytes (QUBS upload limit)", qubs.MaxUploadBytes)
			return a
		case err != nil:
			is.add(codeValue, 400, path+".data", "data is not valid base64")
			return a
		case len(data) == 0:
			is.add(codeValue, 422, path+".data", "data is empty")
			return a
		}
		checkIntegrity(att, data, path, is)
		if !looksLike(contentType, data) {
			is.add(codeValue, 422, path+".data", "data is not a %s file", map[string]string{qubs.ContentTypePDF: "PDF", qubs.ContentTypeDICOM: "DICOM Part 10"}[contentType])
		}
		a.Data, a.Size = data, int64(len(data))
	case att.Url != nil:
		l, ok := parseLiteral(*att.Url)
		if !ok || l.typ != "Binary" {
			is.add(codeNotSupported, 422, path+".url", "an artifact must be inline data or a url to a Binary of this server")
			return a
		}
		// Whether the bridge holds that Binary (a QUBS attachment, or one
		// a client created) is for the server to find out.
		a.BinaryID, a.BinaryBase = l.id, l.base
		if att.Size != nil {
			if *att.Size > qubs.MaxUploadBytes {
				is.add(codeTooCostly, 413, path+".size", "an artifact may be at most %d bytes (QUBS upload limit)", qubs.MaxUploadBytes)
			}
			a.Size = int64(*att.Size)
		}
		if att.Hash != nil {
			h, _, err := decodeBase64(*att.Hash, 64)
			if err != nil || len(h) != sha1.Size {
				is.add(codeValue, 400, path+".hash", "hash must be the base64 of a SHA-1 digest (20 bytes)")
			}
			a.SHA1 = h
		}
	default:
		is.add(codeRequired, 422, path+".data", "an artifact needs inline data or a url to a Binary")
	}
	return a
}

// looksLike checks the magic of an artifact, so that bytes labelled as a
// PDF or DICOM file are one: QUBS accepts any bytes and its users would
// find out when opening the report. PDF: "%PDF-" within the first 1024
// bytes (ISO 32000 tolerates leading junk, Acrobat up to 1024 bytes).
// DICOM: a Part 10 file, "DICM" after the 128-byte preamble (PS3.10 7.1).
func looksLike(contentType string, data []byte) bool {
	switch contentType {
	case qubs.ContentTypePDF:
		return bytes.Contains(data[:min(len(data), 1024)], []byte("%PDF-"))
	case qubs.ContentTypeDICOM:
		return len(data) >= 132 && string(data[128:132]) == "DICM"
	}
	return false
}

// artifactFileName makes Attachment.title a QUBS file name: path segments
// stripped (QUBS would strip them itself; "../" or "C:\" must not reach
// its storage keys either), control characters removed, the extension of
// its content type added when missing, at most qubs.MaxFileNameLength
// characters (the stem is shortened, the extension kept). An empty result
// becomes "report-<ordinal>.pdf" or ".dcm".
func artifactFileName(title, contentType string, ordinal int) string {
	ext := artifactExt[contentType]
	name := title
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
			return -1
		}
		return r
	}, name)
	name = strings.TrimSpace(name)
	if name == "" || strings.Trim(name, ".") == "" {
		return "report-" + strconv.Itoa(ordinal) + ext
	}
	if !hasExt(name, contentType) {
		name += ext
	}
	if utf8.RuneCountInString(name) > qubs.MaxFileNameLength {
		// The extension is one ContentTypeForFileName knows, so short.
		e := name[strings.LastIndexByte(name, '.'):]
		stem := []rune(name[:len(name)-len(e)])
		name = strings.TrimSpace(string(stem[:qubs.MaxFileNameLength-utf8.RuneCountInString(e)])) + e
	}
	return name
}

// hasExt reports whether name ends in an extension that
// ContentTypeForFileName maps to contentType.
func hasExt(name, contentType string) bool {
	return ContentTypeForFileName(name) == contentType
}

// val is *p, "" for nil.
func val(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
