package fhir

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// Issue is one OperationOutcome issue.
type Issue struct {
	// Severity is fatal, error, warning or information (R4 issue-severity).
	Severity string
	// Code is an R4 issue-type code: invalid, structure, required, value,
	// code-invalid, not-found, not-supported, processing, exception,
	// transient, timeout, security, forbidden, login, too-costly, conflict,
	// throttled, informational...
	Code string
	// Details is a summary free of patient data: safe to log. It is sent as
	// issue.details.text.
	Details string
	// Diagnostics may echo what the client sent, so it may hold PHI: it
	// belongs in the response, never in logs.
	Diagnostics string
	// Expression holds FHIRPath locations of the problem (e.g.
	// "DiagnosticReport.status").
	Expression []string
}

// NewOutcome builds an OperationOutcome from issues. A severity or code that
// is not an R4 code is sent as "error" or "processing" rather than producing
// an invalid resource; with no issues the outcome carries one informational
// issue, because R4 requires at least one.
func NewOutcome(issues ...Issue) *models.OperationOutcome {
	if len(issues) == 0 {
		issues = []Issue{{Severity: "information", Code: "informational", Diagnostics: "All OK"}}
	}
	oo := &models.OperationOutcome{Issue: make([]models.OperationOutcomeIssue, 0, len(issues))}
	for _, is := range issues {
		out := models.OperationOutcomeIssue{
			Severity: parseCode(is.Severity, models.IssueSeverityError),
			Code:     parseCode(is.Code, models.IssueTypeProcessing),
		}
		for _, e := range is.Expression {
			if e = fhirString(e); e != "" {
				out.Expression = append(out.Expression, e)
			}
		}
		if d := fhirString(is.Details); d != "" {
			out.Details = &models.CodeableConcept{Text: ptr(d)}
		}
		if d := fhirString(is.Diagnostics); d != "" {
			out.Diagnostics = ptr(d)
		}
		oo.Issue = append(oo.Issue, out)
	}
	return oo
}

// maxText bounds one issue text: parser messages quote the body they
// choke on, and an error answer should not grow with the request.
const maxText = 2000

// fhirString makes s a valid FHIR string (R4 datatypes.html#string): no
// control characters but tab, CR and LF, valid UTF-8, no surrounding
// whitespace, and at most maxText bytes. Diagnostics quote client input and
// third-party messages, which may hold anything.
func fhirString(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' && r != '\r' && r != '\n' || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > maxText {
		cut := maxText
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.TrimSpace(s)
}

// OutcomeJSON is NewOutcome marshalled. It never fails: the model holds only
// strings and codes.
func OutcomeJSON(issues ...Issue) []byte {
	b, err := json.Marshal(NewOutcome(issues...))
	if err != nil {
		return []byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception"}]}`)
	}
	return b
}

// Error is what handlers return when a request fails: the HTTP status and
// the issues to send. The server turns it into an OperationOutcome in one
// place.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Issues are sent as the OperationOutcome's issues.
	Issues []Issue
	// Err is the underlying cause, for logs and errors.Is/As; never shown to
	// the client.
	Err error
}

// Error summarises the status and issue codes and details. It leaves out
// Diagnostics, which may hold PHI, so it is safe to log.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fhir: HTTP %d", e.Status)
	for _, is := range e.Issues {
		b.WriteString(" [" + is.Code)
		if is.Details != "" {
			b.WriteString(": " + is.Details)
		}
		b.WriteString("]")
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// WithCause sets the cause kept for logs and returns e.
func (e *Error) WithCause(err error) *Error {
	e.Err = err
	return e
}

// Errorf returns an Error with one error-severity issue whose diagnostics
// are the formatted message.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Issues: []Issue{{Severity: "error", Code: code, Diagnostics: fmt.Sprintf(format, args...)}}}
}

// parseCode is lookupCode with a fallback for codes R4 does not define.
func parseCode[T any](code string, def T) T {
	if v, ok := lookupCode[T](code); ok {
		return v
	}
	return def
}

// lookupCode turns an R4 code into the samply enum value it names. The
// samply enums only decode from JSON, which is also the one place their
// code tables live.
func lookupCode[T any](code string) (T, bool) {
	var v T
	b, _ := json.Marshal(code)
	err := json.Unmarshal(b, &v)
	return v, err == nil
}

func ptr[T any](v T) *T { return &v }
