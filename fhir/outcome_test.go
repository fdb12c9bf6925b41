package fhir_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
)

func TestOutcomeJSON(t *testing.T) {
	cases := []struct {
		name   string
		issues []fhir.Issue
		want   string
	}{
		{
			name:   "no issues is all ok",
			issues: nil,
			want:   `{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"All OK"}]}`,
		},
		{
			name:   "one error",
			issues: []fhir.Issue{{Severity: "error", Code: "not-found", Diagnostics: "ServiceRequest/1 is not known"}},
			want:   `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found","diagnostics":"ServiceRequest/1 is not known"}]}`,
		},
		{
			name: "details and expression",
			issues: []fhir.Issue{{Severity: "error", Code: "code-invalid", Details: "code type mismatch",
				Diagnostics: `"bogus" is not a DiagnosticReportStatusCode`, Expression: []string{"DiagnosticReport.status"}}},
			want: `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"code-invalid","details":{"text":"code type mismatch"},` +
				`"diagnostics":"\"bogus\" is not a DiagnosticReportStatusCode","expression":["DiagnosticReport.status"]}]}`,
		},
		{
			name: "several issues keep order",
			issues: []fhir.Issue{
				{Severity: "warning", Code: "not-supported", Diagnostics: "ignored: _sort"},
				{Severity: "fatal", Code: "exception"},
			},
			want: `{"resourceType":"OperationOutcome","issue":[{"severity":"warning","code":"not-supported","diagnostics":"ignored: _sort"},{"severity":"fatal","code":"exception"}]}`,
		},
		{
			name:   "unknown codes fall back to error processing",
			issues: []fhir.Issue{{Severity: "bad", Code: "oops", Diagnostics: "x"}},
			want:   `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"x"}]}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := fhir.OutcomeJSON(tc.issues...)
			assert.JSONEq(t, tc.want, string(got))
			fhirtest.RequireValidR4(t, got)

			viaModel, err := json.Marshal(fhir.NewOutcome(tc.issues...))
			require.NoError(t, err)
			assert.JSONEq(t, string(got), string(viaModel))
		})
	}
}

func TestError(t *testing.T) {
	cause := errors.New("upstream broke")
	cases := []struct {
		name      string
		err       *fhir.Error
		wantText  string
		wantCause error
	}{
		{
			name:     "errorf hides diagnostics from Error()",
			err:      fhir.Errorf(http.StatusBadRequest, "value", "patient %q is not valid", "Jane Citizen"),
			wantText: "fhir: HTTP 400 [value]",
		},
		{
			name: "details are shown",
			err: &fhir.Error{Status: http.StatusUnprocessableEntity, Issues: []fhir.Issue{
				{Severity: "error", Code: "code-invalid", Details: "code type mismatch", Diagnostics: "Jane"},
				{Severity: "error", Code: "required", Details: `missing required field "status"`},
			}},
			wantText: `fhir: HTTP 422 [code-invalid: code type mismatch] [required: missing required field "status"]`,
		},
		{
			name:      "cause is unwrapped",
			err:       fhir.Errorf(http.StatusBadGateway, "transient", "QUBS unavailable").WithCause(cause),
			wantText:  "fhir: HTTP 502 [transient]",
			wantCause: cause,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.wantText, tc.err.Error())
			assert.NotContains(t, tc.err.Error(), "Jane")
			if tc.wantCause != nil {
				assert.ErrorIs(t, tc.err, tc.wantCause)
			}
			var wrapped error = tc.err
			var fe *fhir.Error
			require.ErrorAs(t, wrapped, &fe)
			assert.Equal(t, tc.err.Status, fe.Status)
			fhirtest.RequireValidR4(t, fhir.OutcomeJSON(fe.Issues...))
		})
	}
	t.Run("errorf builds one error issue", func(t *testing.T) {
		e := fhir.Errorf(http.StatusNotFound, "not-found", "%s/%s is not known", "Patient", "p1")
		require.Len(t, e.Issues, 1)
		assert.Equal(t, fhir.Issue{Severity: "error", Code: "not-found", Diagnostics: "Patient/p1 is not known"}, e.Issues[0])
	})
}
