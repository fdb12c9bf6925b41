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
	if len(it) == 0 || !json.Valid(it) {
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
