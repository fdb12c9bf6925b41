package store_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

func TestLastErrorKind(t *testing.T) {
	for in, want := range map[string]string{
		"": "",
		"transient: qubs.SubmitReport: transient (HTTP 503)": "transient",
		"not found: qubs.SubmitReport: not found (HTTP 404)": "not found",
		"timeout: attempt timed out":                         "timeout",
		"qubs.SubmitReport: transient (HTTP 503)":            "",
		"superseded by report r2 version 1":                  "",
	} {
		assert.Equal(t, want, store.Delivery{LastError: in}.LastErrorKind(), in)
	}
}
