package mapping

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// serviceItemCode is serviceItemCoding's code and display ("" for none).
func serviceItemCode(it qubs.ServiceItem) (code, display string, ok bool) {
	if code, display, ok, sure := serviceItemCodeFast(it); sure {
		return string(code), string(display), ok
	}
	var f struct {
		ItemNumber  json.RawMessage `json:"itemNumber"`
		Description json.RawMessage `json:"description"`
	}
	// Anything but an object (or null) fails here.
	if len(it) == 0 || json.Unmarshal(it, &f) != nil {
		return "", "", false
	}
	code = scalarString(f.ItemNumber)
	if !validCode(code) {
		return "", "", false
	}
	return code, scalarString(f.Description), true
}

// serviceItemCodeFast reads a service item as serviceItemCode's
// json.Unmarshal does, for the shapes seen in practice, in one pass and
// without allocating (code and display are parts of it): json.Unmarshal
// costs a dozen allocations an item, and
// every worklist entry has items. sure is false when the item needs
// encoding/json's own reading: escapes in a key or in the values used, a
// key that matches only case-insensitively, or non-ASCII keys (which
// encoding/json folds).
func serviceItemCodeFast(it []byte) (code, display []byte, ok, sure bool) {
	if len(it) == 0 || !flatObjectValid(it) && !json.Valid(it) {
		return nil, nil, false, true // json.Unmarshal fails as well
	}
	i := skipSpace(it, 0)
	if it[i] != '{' {
		// null sets nothing (no code); anything else but an object is a
		// type error.
		return nil, nil, false, true
	}
	var num, desc []byte // the members' values, nil when absent
	i = skipSpace(it, i+1)
	for it[i] != '}' {
		// A key: valid JSON, so a string.
		j := i + 1
		for ; it[j] != '"'; j++ {
			if it[j] == '\\' || it[j] >= utf8.RuneSelf {
				return nil, nil, false, false
			}
		}
		key := it[i+1 : j]
		i = skipSpace(it, skipSpace(it, j+1)+1) // past ':'
		start := i
		i = skipValue(it, i)
		switch v := it[start:i]; {
		case string(key) == "itemNumber":
			num = v // a repeated key: the last one wins, as in encoding/json
		case string(key) == "description":
			desc = v
		case asciiEqualFold(key, "itemNumber"), asciiEqualFold(key, "description"):
			return nil, nil, false, false
		}
		i = skipSpace(it, i)
		if it[i] == ',' {
			i = skipSpace(it, i+1)
		}
	}
	code, sure = scalarFast(num)
	if !sure {
		return nil, nil, false, false
	}
	if !validCode(code) {
		return nil, nil, false, true
	}
	display, sure = scalarFast(desc)
	return code, display, sure, sure
}

// scalarFast is scalarString for a value of a valid JSON document, as a
// part of v; sure is false for a string encoding/json would have to
// unescape or repair.
func scalarFast(v []byte) (s []byte, sure bool) {
	switch {
	case len(v) == 0:
		return nil, true
	case v[0] == '"':
		in := v[1 : len(v)-1]
		for _, c := range in {
			if c == '\\' {
				return nil, false
			}
		}
		if !utf8.Valid(in) {
			return nil, false
		}
		return in, true
	case v[0] == '-' || '0' <= v[0] && v[0] <= '9':
		return v, true // json.Number keeps the literal
	}
	return nil, true // null, true, false, an object or an array
}

// flatObjectValid reports whether b is, for sure, valid JSON: an object
// whose values are strings (printable ASCII, no escapes), numbers, true,
// false or null, as QUBS writes service items. False means "not known":
// anything else (nested values, escapes, other bytes) is left to
// json.Valid, which was a quarter of encoding a ServiceRequest.
func flatObjectValid(b []byte) bool {
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return false
	}
	if i = skipSpace(b, i+1); i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	for {
		if i = flatString(b, i); i < 0 {
			return false
		}
		if i = skipSpace(b, i); i == len(b) || b[i] != ':' {
			return false
		}
		if i = flatScalar(b, skipSpace(b, i+1)); i < 0 {
			return false
		}
		if i = skipSpace(b, i); i == len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return skipSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

// flatString returns the index past the string at b[i], or -1 when there
// is none flatObjectValid vouches for.
func flatString(b []byte, i int) int {
	if i == len(b) || b[i] != '"' {
		return -1
	}
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c < 0x20 || c == '\\' || c >= utf8.RuneSelf:
			return -1
		}
	}
	return -1
}

// flatScalar returns the index past the string, number or literal at
// b[i], or -1.
func flatScalar(b []byte, i int) int {
	if i == len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		return flatString(b, i)
	case c == '-' || '0' <= c && c <= '9':
		return flatNumber(b, i)
	}
	for _, lit := range [...]string{"true", "false", "null"} {
		if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
			return i + len(lit)
		}
	}
	return -1
}

// flatNumber returns the index past the JSON number at b[i] (RFC 8259
// section 6), or -1.
func flatNumber(b []byte, i int) int {
	digits := func(i int) int {
		j := i
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
	if b[i] == '-' {
		i++
	}
	switch {
	case i == len(b):
		return -1
	case b[i] == '0':
		i++
	default:
		if i = digits(i); i < 0 {
			return -1
		}
	}
	if i < len(b) && b[i] == '.' {
		if i = digits(i + 1); i < 0 {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i = digits(i); i < 0 {
			return -1
		}
	}
	return i
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just past the value starting at b[i], in a
// document already known to be valid JSON.
func skipValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
			if depth < 0 {
				return i // the end of the enclosing object
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
