package jsonw

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var samples = []string{
	"", "plain", "<b>x</b> & y", "a\u2028b\u2029c", "tab\there", "nul\x00", "\x1f\x7f", "bad \xff\xfe utf8",
	"caf\xe9", "quote\" back\\slash", "line\r\nbreak", "\b\f", "日本語 😀", "\xe2\x80", "\xe2\x80\xa8",
}

func TestStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range samples {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(String(nil, s)), "%q", s)
	}
}

func FuzzString(f *testing.F) {
	for _, s := range samples {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(String(nil, s)))
	})
}

func TestCompact(t *testing.T) {
	for raw, want := range map[string]bool{
		`{"a":"b c","d":[1,2]}`: true,
		`{"a": 1}`:              false,
		"{\"a\":\"\u2028\"}":    false,
		`{"a":"<"}`:             false,
		`{"a":"\"  \\"}`:        true,
		`{"a":"\\"}`:            true,
		`{"a":"x"` + "\n}":      false,
		`{"a":"é"}`:             true,
	} {
		assert.Equal(t, want, Compact([]byte(raw)), raw)
		if want {
			// What json.Marshal would copy in unchanged.
			got, err := json.Marshal(json.RawMessage(raw))
			require.NoError(t, err)
			assert.True(t, bytes.Equal([]byte(raw), got), raw)
		}
	}
}
