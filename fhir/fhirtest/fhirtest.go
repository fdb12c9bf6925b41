// Package fhirtest holds test helpers shared by every package that emits
// FHIR: the one strict R4 check that all end-to-end tests use.
package fhirtest

import (
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
func RequireValidR4(tb testing.TB, body []byte) {
	tb.Helper()
	u, err := unmarshaller()
	if err != nil {
		tb.Fatalf("fhirtest: building the R4 unmarshaller: %v", err)
	}
	if _, err := u.Unmarshal(body); err != nil {
		tb.Fatalf("fhirtest: not valid FHIR R4: %v\n%s", err, truncate(body, 4000))
	}
}

func truncate(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return append(b[:n:n], "..."...)
}
