package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
)

// Validator checks inbound resources strictly with google/fhir's R4
// unmarshaller: required-binding codes, cardinality, primitive formats,
// reference target types and unknown elements. It is safe for concurrent
// use.
type Validator struct {
	u *jsonformat.Unmarshaller
}

const (
	// maxIssues caps the issues reported for one body: a client learns
	// what is wrong from the first hundred, and a hostile body cannot make
	// the answer grow without bound.
	maxIssues = 100
	// maxNesting bounds how deep elements may nest; real resources stay
	// far below (extensions of extensions of contained resources).
	maxNesting = 64
)

// NewValidator builds the R4 validator. Building it loads google/fhir's
// descriptors, so the server makes one and shares it.
func NewValidator() (*Validator, error) {
	// The time zone only applies to dateTimes without one, which R4 allows
	// only for values without a time; UTC keeps validation independent of
	// the host.
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		return nil, fmt.Errorf("fhir.NewValidator: %w", err)
	}
	u.MaxNestingDepth = maxNesting
	return &Validator{u: u}, nil
}

// Validate reports what makes body an invalid FHIR R4 resource, one Issue
// per problem, or nothing when it is valid. Issues have severity error, a
// code (structure, required, value, code-invalid or invalid), the element
// path in Expression where one applies, and Details and Diagnostics that
// name elements and say what is wrong, but never quote the body: a value a
// client sent can be PHI, and answers end up in proxies' and clients' logs.
func (v *Validator) Validate(body []byte) []Issue {
	if len(bytes.TrimSpace(body)) == 0 {
		return []Issue{{Severity: "error", Code: "structure", Details: "empty body", Diagnostics: "the request has no body; a FHIR resource is expected"}}
	}
	var issues []Issue
	if _, err := v.u.Unmarshal(body); err != nil {
		issues = fromUnmarshalError(err)
		if isInvalidJSON(issues) {
			issues[0].Diagnostics = locateSyntaxError(body)
		}
	}
	// jsonformat walks objects in map order; sorting by location makes the
	// answer the same for the same body.
	slices.SortStableFunc(issues, func(a, b Issue) int {
		return strings.Compare(strings.Join(a.Expression, ","), strings.Join(b.Expression, ","))
	})
	if len(issues) > maxIssues {
		n := len(issues)
		issues = append(issues[:maxIssues:maxIssues], Issue{Severity: "error", Code: "too-costly",
			Details: "too many issues", Diagnostics: fmt.Sprintf("%d further issues not listed", n-maxIssues)})
	}
	return issues
}

// ValidateType is Validate plus a check that the resource is of type want,
// as R4 http.html#create requires of the body posted to [base]/[type].
func (v *Validator) ValidateType(body []byte, want string) []Issue {
	issues := v.Validate(body)
	if isInvalidJSON(issues) || slices.ContainsFunc(issues, func(is Issue) bool { return slices.Contains(is.Expression, "resourceType") }) {
		return issues // already said
	}
	var head struct {
		ResourceType any `json:"resourceType"`
	}
	if json.Unmarshal(body, &head) == nil && head.ResourceType != want && head.ResourceType != nil {
		got := "another resourceType"
		if s, ok := head.ResourceType.(string); ok && nameRE.MatchString(strconv.Quote(s)) {
			got = "resourceType " + s // a type name, not a value
		}
		issues = append([]Issue{{Severity: "error", Code: "invalid", Details: "wrong resource type",
			Diagnostics: got + " where " + want + " is expected",
			Expression:  []string{"resourceType"}}}, issues...)
	}
	return issues
}

// isInvalidJSON reports whether the body failed to parse as a JSON object
// at all, the one failure with no element to point at.
func isInvalidJSON(issues []Issue) bool {
	return len(issues) == 1 && issues[0].Details == "invalid JSON" && len(issues[0].Expression) == 0
}

// fromUnmarshalError turns jsonformat's errors into issues. jsonformat
// returns *jsonpbhelper.UnmarshalError or jsonpbhelper.UnmarshalErrorList,
// types of an internal package that cannot be named here, so their exported
// fields are read by reflection; the tests pin the shapes this relies on
// for google/fhir v0.7.4.
func fromUnmarshalError(err error) []Issue {
	var out []Issue
	for e := err; e != nil; e = unwrap(e) {
		rv := reflect.ValueOf(e)
		if rv.Kind() == reflect.Slice {
			for i := range rv.Len() {
				if is, ok := unmarshalIssue(rv.Index(i)); ok {
					out = append(out, is)
				}
			}
			if len(out) > 0 {
				return out
			}
		}
		if is, ok := unmarshalIssue(rv); ok {
			return []Issue{is}
		}
	}
	// Not an UnmarshalError: an error jsonformat did not classify. Its text
	// may quote the body, so none of it is repeated.
	return []Issue{{Severity: "error", Code: "invalid", Details: "invalid resource", Diagnostics: "the resource is not valid FHIR R4"}}
}

// namesOnly are the Details whose Diagnostics name an element or a type
// (quoted), which the client needs to find its mistake; every other
// Diagnostics of jsonformat can quote a value.
var namesOnly = map[string]bool{"unknown field": true, "unknown resource type": true, "invalid resource type": true}

var nameRE = regexp.MustCompile(`^"[A-Za-z_][A-Za-z0-9_]{0,63}"$`)

// locateSyntaxError says where body stops being JSON (line, column, byte
// offset), without repeating any of it.
func locateSyntaxError(body []byte) string {
	var v any
	err := json.Unmarshal(body, &v)
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		if err != nil && strings.Contains(err.Error(), "unexpected end") {
			return "the body ends in the middle of a JSON value"
		}
		return "the body is not a JSON object"
	}
	off := max(min(int(se.Offset), len(body))-1, 0)
	before := body[:off]
	// The same words as the streaming reader's (SyntaxError).
	return (&SyntaxError{Offset: int64(off), Line: bytes.Count(before, []byte{'\n'}) + 1,
		Column: len(before) - bytes.LastIndexByte(before, '\n')}).Error()
}

func unwrap(err error) error {
	if u, ok := err.(interface{ Unwrap() error }); ok {
		return u.Unwrap()
	}
	return nil
}

// unmarshalIssue reads one jsonpbhelper.UnmarshalError.
func unmarshalIssue(rv reflect.Value) (Issue, bool) {
	for rv.Kind() == reflect.Interface || rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return Issue{}, false
		}
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct || rv.Type().Name() != "UnmarshalError" {
		return Issue{}, false
	}
	field := func(name string) string {
		if f := rv.FieldByName(name); f.IsValid() && f.Kind() == reflect.String {
			return f.String()
		}
		return ""
	}
	path, details, diag, typ := field("Path"), field("Details"), field("Diagnostics"), field("Type")
	is := Issue{Severity: "error", Code: issueCode(details, typ), Details: details, Diagnostics: details}
	if diag != "" && namesOnly[details] && nameRE.MatchString(diag) && details != "unknown resource type" {
		// Only an element name is repeated, never a value (an unknown
		// resourceType is a value).
		is.Diagnostics += ": " + diag
	}
	shownPath := path
	switch {
	case details == "unknown field":
		// The path names the parent; the diagnostics name the field.
		if name, err := strconv.Unquote(diag); err == nil && name != "" {
			path = joinPath(path, name)
		}
	case details == "unknown resource type":
		// The path ends in the unknown type's name, where a known one
		// would have been.
		if name, err := strconv.Unquote(diag); err == nil && (path == name || strings.HasSuffix(path, "."+name)) {
			path = strings.TrimSuffix(strings.TrimSuffix(path, name), ".")
		}
		path = joinPath(path, "resourceType")
		shownPath = path
	case details == "invalid resource type" || details == `missing required field "resourceType"`:
		path = joinPath(path, "resourceType")
	}
	if shownPath != "" {
		is.Diagnostics = shownPath + ": " + is.Diagnostics
	}
	if path != "" {
		is.Expression = []string{fhirPath(path)}
	}
	return is, true
}

func joinPath(parent, child string) string {
	if parent == "" {
		return child
	}
	return parent + "." + child
}

// issueCode classifies an UnmarshalError by its PHI-free Details.
func issueCode(details, typ string) string {
	switch {
	case typ == "RequiredFieldError" || strings.HasPrefix(details, "missing required field"):
		return "required"
	case strings.HasSuffix(details, "resource type"): // unknown or invalid resourceType
		return "invalid"
	case typ == "ReferenceTypeError":
		return "value"
	case details == "invalid JSON", details == "unknown field", details == "invalid field",
		details == "invalid extension field", details == "expected array",
		strings.HasPrefix(details, "cannot accept multiple values"),
		strings.HasPrefix(details, "array length mismatch"),
		strings.Contains(details, "nesting depth"):
		return "structure"
	case strings.Contains(details, "code type mismatch") || strings.Contains(details, "invalid code"):
		return "code-invalid"
	case strings.HasPrefix(details, "expected ") || strings.HasPrefix(details, "invalid "):
		return "value"
	}
	return "invalid"
}

// containedRE finds where google/fhir's paths name the type of a contained
// or Bundle entry resource ("entry[0].resource.Patient.gender"), which
// FHIRPath writes as ofType(Patient).
var containedRE = regexp.MustCompile(`\.(resource|contained\[\d+\])\.([A-Za-z]+)\b`)

func fhirPath(p string) string {
	return containedRE.ReplaceAllStringFunc(p, func(m string) string {
		sub := containedRE.FindStringSubmatch(m)
		typ := sub[2]
		if typ == "resourceType" {
			return m
		}
		return "." + sub[1] + ".ofType(" + strings.ToUpper(typ[:1]) + typ[1:] + ")"
	})
}
