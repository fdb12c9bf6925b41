package fhir

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ParamSpec describes one search parameter a handler implements.
type ParamSpec struct {
	// Name is the parameter name, e.g. "patient" or "_id".
	Name string
	// Type is the R4 search parameter type: token, reference, string, date,
	// number, quantity, uri, composite or special.
	Type string
	// Definition is the canonical URL of the SearchParameter, if standard
	// (e.g. "http://hl7.org/fhir/SearchParameter/clinical-patient").
	Definition string
	// Documentation explains the parameter in the CapabilityStatement.
	Documentation string
	// Repeatable parameters may be given more than once, and the handler
	// ANDs the values (R4 search.html#combining: date=ge..&date=le.. is a
	// range). Others given twice are refused.
	Repeatable bool
	// Modifiers are the modifiers the handler implements besides a
	// reference's [type] (e.g. "missing"): a value given with one arrives
	// in Query.Params under "name:modifier".
	Modifiers []string
}

// SearchSpec is what a search handler understands.
type SearchSpec struct {
	// Resource is the resource type searched.
	Resource string
	// Params are the parameters implemented, besides _count, _include,
	// _format and _pretty which ParseSearch itself handles.
	Params []ParamSpec
	// Includes are the _include values served, e.g. "ServiceRequest:subject".
	Includes []string
	// RevIncludes are the _revinclude values served, e.g. "Task:focus".
	RevIncludes []string
}

// Query is a parsed search.
type Query struct {
	// Count is the page size: _count, clamped to the maximum, or the default.
	Count int
	// Params holds the recognised parameters of the spec, by name, with the
	// raw value of the one occurrence allowed (comma-separated alternatives
	// unsplit: see SplitValues).
	Params map[string][]string
	// Includes are the _include values to serve, in request order, without
	// duplicates.
	Includes []string
	// RevIncludes are the _revinclude values to serve, likewise.
	RevIncludes []string
	// Ignored lists what lenient handling skipped: unknown parameter names
	// and "_include=value" for includes not served. Sorted.
	Ignored []string
	// Values are the request's parameters as received.
	Values url.Values
}

// Parameters handled here rather than by the spec: the server reads _format
// (negotiation) and _pretty (indentation) itself.
var resultParams = map[string]bool{"_count": true, "_include": true, "_revinclude": true, "_format": true, "_pretty": true, "_elements": true}

// ParseSearch parses a search request's parameters against what the handler
// implements, following R4 search.html:
//
//   - Unknown parameters (including result parameters not implemented, such
//     as _sort, _summary, _elements, _total) are ignored and
//     listed in Query.Ignored, unless the client sent
//     "Prefer: handling=strict", which turns them into a 400 (R4
//     search.html#errors). Lenient is the default.
//   - _include and _revinclude values not in spec.Includes and
//     spec.RevIncludes are handled the same way.
//   - The [type] modifier of a reference parameter is applied:
//     "subject:Patient=123" arrives in Params["subject"] as "Patient/123".
//     Modifiers the spec lists (ParamSpec.Modifiers) arrive under
//     "name:modifier". Other modifiers (":exact", ":missing", ":not",
//     ":iterate"...) on a recognised parameter are refused with 400 in
//     both modes: ignoring one would change what matches, not just what
//     is returned.
//   - A recognised parameter given twice (with or without modifier) is
//     refused with 400 unless its spec is Repeatable (the handler ANDs
//     the values). Alternatives go comma-separated in one value (OR).
//   - _count must be a positive integer; above maxCount it is clamped
//     (servers may return fewer than asked). _count=0, which R4 defines as
//     "count only", is refused: QUBS gives no total to report.
//   - Parameters with an empty value are skipped, as if absent.
//
// Problems are returned as *Error with status 400.
func ParseSearch(values url.Values, prefer string, spec SearchSpec, defaultCount, maxCount int) (*Query, error) {
	strict := StrictHandling(prefer)
	q := &Query{Count: defaultCount, Params: map[string][]string{}, Values: values}
	known := make(map[string]ParamSpec, len(spec.Params))
	for _, p := range spec.Params {
		known[p.Name] = p
	}
	var unknown []string
	for key, vs := range values {
		if key == "" {
			continue
		}
		name, modifier, hasModifier := strings.Cut(key, ":")
		ps, isKnown := known[name]
		if !isKnown && !resultParams[name] {
			unknown = append(unknown, key)
			continue
		}
		vs = slices.DeleteFunc(slices.Clone(vs), func(v string) bool { return v == "" })
		if hasModifier && slices.Contains(ps.Modifiers, modifier) {
			if len(vs) == 0 {
				continue
			}
			if !ps.Repeatable && (len(vs) > 1 || q.Params[key] != nil) {
				return nil, Errorf(http.StatusBadRequest, "not-supported", "search parameter %s is repeated", key)
			}
			q.Params[key] = append(q.Params[key], vs...)
			continue
		}
		if hasModifier {
			if ps.Type != "reference" || !resourceTypeRE.MatchString(modifier) {
				return nil, Errorf(http.StatusBadRequest, "not-supported", "modifier :%s of search parameter %s is not supported", modifier, name)
			}
			var err error
			if vs, err = typedReferences(name, modifier, vs); err != nil {
				return nil, err
			}
		}
		if len(vs) == 0 {
			continue
		}
		switch name {
		case "_format", "_pretty":
			continue
		case "_elements":
			// Applied to the answer by the server (SubsetBundle).
			if _, err := ParseElements(strings.Join(vs, ",")); err != nil {
				return nil, err
			}
			continue
		case "_include":
			unknown = addIncludes(&q.Includes, spec.Includes, name, vs, unknown)
			continue
		case "_revinclude":
			unknown = addIncludes(&q.RevIncludes, spec.RevIncludes, name, vs, unknown)
			continue
		}
		if ps.Repeatable {
			q.Params[name] = append(q.Params[name], vs...)
			continue
		}
		if len(vs) > 1 || q.Params[name] != nil {
			return nil, Errorf(http.StatusBadRequest, "not-supported", "search parameter %s is repeated; give alternatives comma-separated in one parameter", name)
		}
		if name == "_count" {
			n, err := strconv.Atoi(vs[0])
			switch {
			case err != nil || n < 0:
				return nil, Errorf(http.StatusBadRequest, "value", "_count must be a positive integer")
			case n == 0:
				return nil, Errorf(http.StatusBadRequest, "not-supported", "_count=0 (a count without entries) is not supported: the total is not known")
			case maxCount > 0 && n > maxCount:
				n = maxCount
			}
			q.Count = n
			continue
		}
		q.Params[name] = vs
	}
	slices.Sort(unknown)
	unknown = slices.Compact(unknown)
	if len(unknown) > 0 && strict {
		return nil, Errorf(http.StatusBadRequest, "not-supported", "unsupported search parameters (Prefer: handling=strict): %s", strings.Join(unknown, ", "))
	}
	q.Ignored = unknown
	n := 0
	for _, vs := range q.Params {
		for _, v := range vs {
			n += len(SplitValues(v))
		}
	}
	if n > MaxSearchValues {
		return nil, Errorf(http.StatusBadRequest, "too-costly",
			"the search names %d values (repeated parameters and comma-separated alternatives); at most %d are served", n, MaxSearchValues)
	}
	return q, nil
}

// MaxSearchValues bounds the values one search may name, all parameters'
// repeats and comma-separated alternatives counted: each is a condition
// of the store's query, and a review found that about 1,000 made SQLite
// refuse the query (expression tree too deep: a 500) and a few hundred
// identifiers kept PostgreSQL busy for seconds to minutes. 100 is far
// above what a worklist client sends (a handful of patients or UIDs).
const MaxSearchValues = 100

// addIncludes adds the served values of an _include or _revinclude to
// dst, once each in request order, and returns unknown with the others.
func addIncludes(dst *[]string, served []string, name string, vs, unknown []string) []string {
	for _, v := range vs {
		switch {
		case !slices.Contains(served, v):
			unknown = append(unknown, name+"="+v)
		case !slices.Contains(*dst, v):
			*dst = append(*dst, v)
		}
	}
	return unknown
}

// typedReferences applies the [type] modifier of a reference parameter
// ("subject:Patient=123", R4 search.html#reference) by writing each
// alternative as "Type/id", so handlers see one form.
func typedReferences(name, typ string, vs []string) ([]string, error) {
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		alts := SplitValues(v)
		for i, a := range alts {
			if strings.Contains(a, "/") {
				if t, _, err := ParseReference(a, typ); err != nil || t != typ {
					return nil, Errorf(http.StatusBadRequest, "value", "%s:%s=%s names another resource type", name, typ, a)
				}
			} else {
				a = typ + "/" + a
			}
			alts[i] = strings.ReplaceAll(a, ",", `\,`)
		}
		out = append(out, strings.Join(alts, ","))
	}
	return out, nil
}

// StrictHandling reports whether a Prefer header asks for strict search
// handling ("handling=strict", R4 search.html#errors).
func StrictHandling(prefer string) bool {
	for _, part := range strings.FieldsFunc(prefer, func(r rune) bool { return r == ',' || r == ';' }) {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "handling") {
			return strings.EqualFold(strings.Trim(strings.TrimSpace(v), `"`), "strict")
		}
	}
	return false
}

// SplitValues splits a parameter value at the commas that separate
// alternatives, keeping escaped commas ("\,") as commas and every other
// escape as it is, for ParseToken and ParseReference to read
// (R4 search.html#escaping).
func SplitValues(v string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && i+1 < len(v):
			if v[i+1] == ',' {
				cur.WriteByte(',')
			} else {
				cur.WriteByte(c)
				cur.WriteByte(v[i+1])
			}
			i++
		case c == ',':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(out, cur.String())
}

// Token is a parsed token search value.
type Token struct {
	// System is the code system; empty with HasSystem means "no system"
	// ("|code").
	System string
	// Code is the code or identifier value; empty means any ("system|").
	Code string
	// HasSystem reports whether the value had a '|': "code" matches any
	// system, "|code" only codes without one.
	HasSystem bool
}

// ParseToken parses "system|code", "|code", "code" or "system|", splitting
// at the first unescaped '|' and undoing the escapes \| \, \$ \\.
func ParseToken(v string) Token {
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '|':
			return Token{System: unescape(v[:i]), Code: unescape(v[i+1:]), HasSystem: true}
		}
	}
	return Token{Code: unescape(v)}
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

var (
	idRE           = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)
	resourceTypeRE = regexp.MustCompile(`^[A-Z][A-Za-z]{0,63}$`)
)

// ParseReference parses a reference search value: "Type/id", a bare "id"
// (typed defaultType), or an absolute URL ending in "Type/id", with an
// optional "/_history/version" suffix that is dropped. The type must look
// like a resource type and the id like a FHIR id (R4 datatypes.html#id);
// anything else is a 400 *Error. Whether the type is one the parameter
// allows is the handler's call.
func ParseReference(v, defaultType string) (typ, id string, err error) {
	s := unescape(strings.TrimSpace(v))
	if i := strings.Index(s, "/_history/"); i >= 0 {
		s = s[:i]
	}
	segs := strings.Split(s, "/")
	switch {
	case len(segs) == 1:
		typ, id = defaultType, segs[0]
	case len(segs) == 2:
		typ, id = segs[0], segs[1]
	case strings.Contains(segs[0], ":"):
		// Absolute URL: scheme://host/.../Type/id.
		if u, perr := url.Parse(s); perr == nil && u.Host != "" {
			typ, id = segs[len(segs)-2], segs[len(segs)-1]
		}
	}
	if !resourceTypeRE.MatchString(typ) || !idRE.MatchString(id) {
		return "", "", Errorf(http.StatusBadRequest, "value", "%q is not a reference of the form [type/]id or an absolute URL ending in type/id", v)
	}
	return typ, id, nil
}

// Used returns the request's parameters less what the search ignored:
// unknown parameters, includes not served, and empty values. R4
// search.html#selflink: the self link says what the server actually did,
// so a client can tell its filter was not applied.
func (q *Query) Used() url.Values {
	ignored := map[string]bool{}
	droppedIncludes := map[string]bool{}
	for _, ig := range q.Ignored {
		if strings.HasPrefix(ig, "_include=") || strings.HasPrefix(ig, "_revinclude=") {
			droppedIncludes[ig] = true
			continue
		}
		ignored[ig] = true
	}
	out := url.Values{}
	for k, vs := range q.Values {
		if k == "" || ignored[k] {
			continue
		}
		for _, v := range vs {
			if v == "" || droppedIncludes[k+"="+v] {
				continue
			}
			out[k] = append(out[k], v)
		}
	}
	return out
}

// IgnoredOutcome is the OperationOutcome that tells a client which of its
// parameters were ignored (R4 search.html#errors: an entry with search
// mode outcome), or nil when none were.
func (q *Query) IgnoredOutcome() json.RawMessage {
	if len(q.Ignored) == 0 {
		return nil
	}
	return OutcomeJSON(Issue{Severity: "warning", Code: "not-supported",
		Diagnostics: "ignored search parameters: " + strings.Join(q.Ignored, ", ")})
}
