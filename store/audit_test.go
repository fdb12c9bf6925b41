package store_test

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

func TestAuditQuery(t *testing.T) {
	tests := []struct {
		name   string
		typ    string
		params url.Values
		want   string
	}{
		{"no parameters", "ServiceRequest", nil, "ServiceRequest"},
		{"names sorted, values dropped", "ServiceRequest",
			url.Values{"status": {"active"}, "patient": {"Patient/1"}, "_count": {"5", "6"}},
			"ServiceRequest?_count&patient&status"},
		{"modifiers kept", "Patient", url.Values{"name:exact": {"Citizen"}, "birthdate": {"1970-01-01"}},
			"Patient?birthdate&name:exact"},
		{"separators in names escaped", "Patient", url.Values{"a=b&c": {"x"}}, "Patient?a%3Db%26c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := store.AuditQuery(tt.typ, tt.params)
			assert.Equal(t, tt.want, got)
			assert.NotContains(t, got, "=", "no values")
			for _, vs := range tt.params {
				for _, v := range vs {
					assert.NotContains(t, got, v)
				}
			}
		})
	}
}
