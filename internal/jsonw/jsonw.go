// Package jsonw appends JSON values to byte slices exactly as
// encoding/json's Marshal would write them, for the encoders that build FHIR
// JSON directly: their output must stay byte-identical to what
// encoding/json produced before, so strings are escaped by the same rules
// (HTML characters, U+2028 and U+2029, invalid UTF-8 as U+FFFD).
package jsonw

import (
	"strconv"
	"unicode/utf8"
)

const hex = "0123456789abcdef"

// safe marks the ASCII bytes encoding/json copies unescaped when it
// escapes HTML (its htmlSafeSet): everything printable but '"', '\\', '<',
// '>' and '&'.
var safe = func() (s [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		s[b] = b != '"' && b != '\\' && b != '<' && b != '>' && b != '&'
	}
	return s
}()

// String appends s as a JSON string, escaped as json.Marshal escapes it.
func String(dst []byte, s string) []byte {
	return append(Escaped(append(dst, '"'), s), '"')
}

// Escaped appends the inside of String(s), without the quotes, so that a
// string can be written in parts. Escaping the parts one by one is
// escaping the whole only when each part is valid UTF-8 on its own.
func Escaped[S ~string | ~[]byte](dst []byte, s S) []byte {
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if safe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		// A short conversion, so it stays on the stack for []byte.
		c, size := utf8.DecodeRuneInString(string(s[i:min(len(s), i+utf8.UTFMax)]))
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// JSONP cannot carry U+2028 and U+2029 raw; encoding/json escapes
		// them unconditionally.
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}

// Field appends `"name":` after a comma unless dst ends an opening brace
// or bracket. name must need no escaping.
func Field(dst []byte, name string) []byte {
	if n := len(dst); n > 0 && dst[n-1] != '{' && dst[n-1] != '[' {
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, name...)
	return append(dst, '"', ':')
}

// StringField appends `"name":"value"`, with a leading comma as Field.
func StringField(dst []byte, name, value string) []byte {
	return String(Field(dst, name), value)
}

// Int appends n as a JSON number.
func Int(dst []byte, n int) []byte { return strconv.AppendInt(dst, int64(n), 10) }

// Compact reports whether raw can be copied into a larger document as
// json.Marshal would copy a json.RawMessage: no whitespace outside strings,
// and nothing encoding/json would escape on the way (<, >, &, U+2028,
// U+2029). It is a quick byte scan, not validation: callers pass JSON they
// made themselves, and fall back to encoding/json when it says no.
func Compact(raw []byte) bool {
	if len(raw) == 0 {
		return false
	}
	in := false
	for i := 0; i < len(raw); i++ {
		switch b := raw[i]; b {
		case '<', '>', '&':
			return false
		case 0xE2:
			// U+2028 and U+2029 are E2 80 A8 and E2 80 A9.
			if i+2 < len(raw) && raw[i+1] == 0x80 && (raw[i+2] == 0xA8 || raw[i+2] == 0xA9) {
				return false
			}
		case '"':
			in = !in
		case '\\':
			if in {
				i++ // the escaped byte cannot end the string
			}
		case ' ', '\t', '\n', '\r':
			if !in {
				return false
			}
		default:
			if b < 0x20 || (b >= 0x80 && !in) {
				return false
			}
		}
	}
	return !in
}
