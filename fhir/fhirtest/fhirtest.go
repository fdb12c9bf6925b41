// Package fhirtest holds test helpers shared by every package that emits
// FHIR: the one strict R4 check that all end-to-end tests use.
package fhirtest

import (
	"crypto/sha256"
	"encoding/json"
	"sync"
	"testing"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
)

var (
	once    sync.Once
	strict  *jsonformat.Unmarshaller
	initErr error
)

func unmarshaller() (*jsonformat.Unmarshaller, error) {
	once.Do(func() {
		strict, initErr = jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	})
	return strict, initErr
}

// RequireValidR4 fails the test unless body is a FHIR R4 resource (a
// Bundle's entries included) that passes github.com/google/fhir/go's strict
// validation: value sets of required bindings, cardinality, primitives and
// reference types.
//
// A Bundle's entry resources are validated one by one, each distinct
// resource once per test binary (validated), and the Bundle itself with
// each entry's resource replaced by a valid stand-in: the checks are per
// resource, so this is the same verdict, and a test walking a worklist of
// 1,000 studies in pages of several sizes validates each study once
// rather than once a walk (most of such a test's time under -race).
func RequireValidR4(tb testing.TB, body []byte) {
	tb.Helper()
	u, err := unmarshaller()
	if err != nil {
		tb.Fatalf("fhirtest: building the R4 unmarshaller: %v", err)
		return
	}
	shell, resources, ok := splitBundle(body)
	if !ok {
		if _, err := u.Unmarshal(body); err != nil {
			tb.Fatalf("fhirtest: not valid FHIR R4: %v\n%s", err, truncate(body, 4000))
		}
		return
	}
	for i, r := range resources {
		key := sha256.Sum256(r)
		if _, ok := validated.Load(key); ok {
			continue
		}
		if _, err := u.Unmarshal(r); err != nil {
			tb.Fatalf("fhirtest: entry %d of the Bundle is not valid FHIR R4: %v\n%s", i, err, truncate(r, 4000))
			return
		}
		validated.Store(key, struct{}{})
	}
	if _, err := u.Unmarshal(shell); err != nil {
		tb.Fatalf("fhirtest: not valid FHIR R4: %v\n%s", err, truncate(body, 4000))
	}
}

// validated holds the SHA-256 of every entry resource found valid.
var validated sync.Map

// standIn replaces a Bundle entry's resource once it is validated: the
// least valid resource (Basic needs a code).
var standIn = json.RawMessage(`{"resourceType":"Basic","code":{"text":"validated on its own"}}`)

// splitBundle returns a Bundle's entry resources and the Bundle with
// each replaced by standIn; ok is false for anything else, which is then
// validated as it is. Repeated member names collapse here as they do in
// the unmarshaller's own reading (encoding/json semantics, the last wins).
func splitBundle(body []byte) (shell []byte, resources []json.RawMessage, ok bool) {
	var b map[string]json.RawMessage
	if json.Unmarshal(body, &b) != nil || string(b["resourceType"]) != `"Bundle"` {
		return nil, nil, false
	}
	var entries []map[string]json.RawMessage
	if raw, has := b["entry"]; has {
		if json.Unmarshal(raw, &entries) != nil {
			return nil, nil, false
		}
	}
	for _, e := range entries {
		if r, has := e["resource"]; has {
			resources = append(resources, r)
			e["resource"] = standIn
		}
	}
	if len(resources) == 0 {
		return nil, nil, false
	}
	raw, err := json.Marshal(entries)
	if err != nil {
		return nil, nil, false
	}
	b["entry"] = raw
	if shell, err = json.Marshal(b); err != nil {
		return nil, nil, false
	}
	return shell, resources, true
}

func truncate(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return append(b[:n:n], "..."...)
}
