package fhir_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
)

func TestNegotiate(t *testing.T) {
	const fhirJSON = "application/fhir+json; charset=utf-8"
	const plainJSON = "application/json; charset=utf-8"
	cases := []struct {
		name   string
		accept string
		format string
		want   string // "" means ErrNotAcceptable
	}{
		{"nothing asked", "", "", fhirJSON},
		{"fhir json", "application/fhir+json", "", fhirJSON},
		{"fhir json with params", "application/fhir+json; fhirVersion=4.0; charset=utf-8", "", fhirJSON},
		{"dstu2 fhir json", "application/json+fhir", "", fhirJSON},
		{"plain json", "application/json", "", plainJSON},
		{"any", "*/*", "", fhirJSON},
		{"any application", "application/*", "", fhirJSON},
		{"browser", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "", fhirJSON},
		{"json and fhir json tie goes to fhir", "application/json, application/fhir+json", "", fhirJSON},
		{"json preferred by q", "application/fhir+json;q=0.5, application/json", "", plainJSON},
		{"json excluded by q=0", "application/json;q=0, */*;q=0.1", "", fhirJSON},
		{"malformed range skipped", "a/b/c;;, application/json", "", plainJSON},
		{"bad q skipped", "application/json;q=2, application/fhir+json", "", fhirJSON},
		{"fhir xml", "application/fhir+xml", "", ""},
		{"xml", "application/xml", "", ""},
		{"text xml", "text/xml", "", ""},
		{"html only", "text/html", "", ""},
		{"all json refused", "application/fhir+json;q=0, application/json;q=0", "", ""},
		{"format json", "", "json", fhirJSON},
		{"format JSON upper", "", "JSON", fhirJSON},
		{"format fhir json", "", "application/fhir+json", fhirJSON},
		{"format fhir json with plus decoded as space", "", "application/fhir json", fhirJSON},
		{"format plain json", "", "application/json", plainJSON},
		{"format wins over xml accept", "application/fhir+xml", "json", fhirJSON},
		{"format xml wins over json accept", "application/fhir+json", "xml", ""},
		{"format fhir xml", "", "application/fhir+xml", ""},
		{"format text xml", "", "text/xml", ""},
		{"format application xml", "", "application/xml", ""},
		{"format turtle", "", "ttl", ""},
		{"format garbage", "", "%%%", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := fhir.Negotiate(tc.accept, tc.format)
			if tc.want == "" {
				require.ErrorIs(t, err, fhir.ErrNotAcceptable)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestIsJSONContentType(t *testing.T) {
	cases := []struct {
		name string
		ct   string
		want bool
	}{
		{"fhir json", "application/fhir+json", true},
		{"fhir json utf-8", "application/fhir+json; charset=UTF-8", true},
		{"fhir json with version", "application/fhir+json;fhirVersion=4.0", true},
		{"plain json", "application/json", true},
		{"plain json upper case", "Application/JSON; charset=utf-8", true},
		{"dstu2", "application/json+fhir", true},
		{"latin1 refused", "application/fhir+json; charset=iso-8859-1", false},
		{"xml", "application/fhir+xml", false},
		{"form", "application/x-www-form-urlencoded", false},
		{"text", "text/plain", false},
		{"empty", "", false},
		{"malformed", "application/json; charset", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, fhir.IsJSONContentType(tc.ct))
		})
	}
}
