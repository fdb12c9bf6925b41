package jsonw

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// Member is one top-level member of a JSON object, its value as written.
type Member struct {
	Key   string
	Value json.RawMessage
}

// Object is a JSON object's members in document order: for editing a
// resource at the top level without a round trip through a model that
// would drop what it does not know, or reorder what it does.
type Object []Member

// Get returns the value of the member named key.
func (o Object) Get(key string) (json.RawMessage, bool) {
	for _, m := range o {
		if m.Key == key {
			return m.Value, true
		}
	}
	return nil, false
}

// Errors of Members.
var (
	ErrNotObject = errors.New("not a JSON object")
	ErrInvalid   = errors.New("not valid JSON")
	ErrRepeated  = errors.New("a member is repeated")
)

// Members splits a JSON object into its members, in order. Duplicate keys
// are refused: which one counts is up to each reader.
func Members(b []byte) (Object, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, ErrNotObject
	}
	var ms Object
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, ErrInvalid
		}
		key, _ := t.(string)
		if seen[key] {
			return nil, ErrRepeated
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, ErrInvalid
		}
		ms = append(ms, Member{key, raw})
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, ErrInvalid
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, ErrInvalid // trailing data
	}
	return ms, nil
}
