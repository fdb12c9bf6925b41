package mapping

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
)

// flatCases are service items flatObjectValid is asked about; want is
// its answer, and for every true json.Valid must agree.
var flatCases = []struct {
	in   string
	want bool
}{
	{`{"itemNumber":"56001","description":"CT brain without contrast","fee":195.05}`, true},
	{` { "itemNumber" : "56001" , "fee" : -1.5e+3, "x": true, "y": false, "z": null } `, true},
	{`{}`, true},
	{"{\t}\n", true},
	{`{"a":0}`, true},
	{`{"a":-0.0E-0}`, true},
	// Left to json.Valid: nested, escaped, non-ASCII.
	{`{"itemNumber":"56301","x-unknown":{"nested":[1,2]}}`, false},
	{`{"a":"\"quoted\""}`, false},
	{`{"a":"é"}`, false},
	{`{"a":[]}`, false},
	// Not JSON at all.
	{``, false},
	{`null`, false},
	{`[]`, false},
	{`{`, false},
	{`{"a"}`, false},
	{`{"a":}`, false},
	{`{"a":1,}`, false},
	{`{"a":1 "b":2}`, false},
	{`{"a":1}x`, false},
	{`{"a":1}}`, false},
	{`{"a":01}`, false},
	{`{"a":1.}`, false},
	{`{"a":.5}`, false},
	{`{"a":-}`, false},
	{`{"a":1e}`, false},
	{`{"a":+1}`, false},
	{`{"a":tru}`, false},
	{`{"a":nul`, false},
	{`{"a":"b`, false},
	{"{\"a\":\"\x01\"}", false},
	{`{a:1}`, false},
}

func TestFlatObjectValid(t *testing.T) {
	t.Parallel()
	for _, tc := range flatCases {
		got := flatObjectValid([]byte(tc.in))
		assert.Equal(t, tc.want, got, tc.in)
		if got {
			assert.True(t, json.Valid([]byte(tc.in)), tc.in)
		}
	}
}

// FuzzFlatObjectValid holds flatObjectValid to never vouching for what
// json.Valid refuses: serviceItemCodeFast's scan relies on it.
func FuzzFlatObjectValid(f *testing.F) {
	for _, tc := range flatCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if flatObjectValid(b) && !json.Valid(b) {
			t.Fatalf("flatObjectValid(%q) but not json.Valid", b)
		}
	})
}
