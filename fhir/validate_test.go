package fhir_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
)

var (
	validatorOnce sync.Once
	validator     *fhir.Validator
	validatorErr  error
)

func newValidator(tb testing.TB) *fhir.Validator {
	tb.Helper()
	validatorOnce.Do(func() { validator, validatorErr = fhir.NewValidator() })
	require.NoError(tb, validatorErr)
	return validator
}

func reportFixture(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile("testdata/diagnosticreport.json")
	require.NoError(tb, err)
	return b
}

// withReport returns the report fixture with fields set (nil deletes).
func withReport(tb testing.TB, set map[string]any) []byte {
	tb.Helper()
	var m map[string]any
	require.NoError(tb, json.Unmarshal(reportFixture(tb), &m))
	for k, v := range set {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	require.NoError(tb, err)
	return b
}

// phi is a value that stands for patient data: it may appear in
// Diagnostics, never in Details.
const phi = "JaneCitizen1988"

func TestValidate(t *testing.T) {
	type want struct{ code, expression string }
	cases := []struct {
		name string
		body []byte
		want []want // nil: valid
	}{
		{name: "typical report is valid", body: reportFixture(t)},
		{name: "minimal patient is valid", body: []byte(`{"resourceType":"Patient","id":"p1","gender":"female"}`)},
		{name: "invalid status code",
			body: withReport(t, map[string]any{"status": phi}),
			want: []want{{"code-invalid", "DiagnosticReport.status"}}},
		{name: "bad issued instant",
			body: withReport(t, map[string]any{"issued": "2025-13-01"}),
			want: []want{{"value", "DiagnosticReport.issued"}}},
		{name: "local date format",
			body: withReport(t, map[string]any{"effectiveDateTime": "10/01/2025"}),
			want: []want{{"value", "DiagnosticReport.effectiveDateTime"}}},
		{name: "missing required status",
			body: withReport(t, map[string]any{"status": nil}),
			want: []want{{"required", "DiagnosticReport"}}},
		{name: "single where array expected",
			body: withReport(t, map[string]any{"basedOn": map[string]any{"reference": "ServiceRequest/1"}}),
			want: []want{{"structure", "DiagnosticReport.basedOn"}}},
		{name: "array where single expected",
			body: withReport(t, map[string]any{"code": []any{map[string]any{"text": "x"}}}),
			want: []want{{"structure", "DiagnosticReport.code"}}},
		{name: "unknown field",
			body: withReport(t, map[string]any{phi: "x"}),
			want: []want{{"structure", "DiagnosticReport." + phi}}},
		{name: "null value",
			body: withReport(t, map[string]any{"status": "final", "conclusion": json.RawMessage("null")}),
			want: []want{{"value", "DiagnosticReport.conclusion"}}},
		{name: "reference to a type not allowed",
			body: withReport(t, map[string]any{"subject": map[string]any{"reference": "Medication/m1"}}),
			want: []want{{"value", "DiagnosticReport.subject"}}},
		{name: "bad base64",
			body: withReport(t, map[string]any{"presentedForm": []any{map[string]any{"contentType": "text/plain", "data": "!!" + phi}}}),
			want: []want{{"value", "DiagnosticReport.presentedForm[0].data"}}},
		{name: "several problems, sorted by path",
			body: withReport(t, map[string]any{"status": "bogus", "issued": "yesterday", "zzz": 1}),
			want: []want{{"value", "DiagnosticReport.issued"}, {"code-invalid", "DiagnosticReport.status"}, {"structure", "DiagnosticReport.zzz"}}},
		{name: "contained resource path",
			body: withReport(t, map[string]any{"contained": []any{map[string]any{"resourceType": "Patient", "id": "p", "gender": phi}}}),
			want: []want{{"code-invalid", "DiagnosticReport.contained[0].ofType(Patient).gender"}}},
		{name: "unknown resource type",
			body: []byte(`{"resourceType":"DiagnosticRaport","status":"final"}`),
			want: []want{{"invalid", "resourceType"}}},
		{name: "missing resource type",
			body: []byte(`{"status":"final"}`),
			want: []want{{"required", "resourceType"}}},
		{name: "resource type not a string",
			body: []byte(`{"resourceType":7}`),
			want: []want{{"invalid", "resourceType"}}},
		{name: "unknown resource type in bundle entry",
			body: []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patiant"}}]}`),
			want: []want{{"invalid", "Bundle.entry[0].resource.resourceType"}}},
		{name: "not json", body: []byte(`{"resourceType":`), want: []want{{"structure", ""}}},
		{name: "json array", body: []byte(`[{"resourceType":"Patient"}]`), want: []want{{"structure", ""}}},
		{name: "trailing garbage", body: append(reportFixture(t), " x"...), want: []want{{"structure", ""}}},
		{name: "empty", body: []byte(" \n"), want: []want{{"structure", ""}}},
	}
	v := newValidator(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			issues := v.Validate(tc.body)
			var got []want
			for _, is := range issues {
				e := ""
				if len(is.Expression) > 0 {
					e = strings.Join(is.Expression, ",")
				}
				got = append(got, want{is.Code, e})
				assert.Equal(t, "error", is.Severity)
				assert.NotEmpty(t, is.Details)
				assert.NotEmpty(t, is.Diagnostics)
				assert.NotContains(t, is.Details, phi, "details must be free of patient data")
			}
			assert.Equal(t, tc.want, got)
			if len(issues) > 0 {
				fhirtest.RequireValidR4(t, fhir.OutcomeJSON(issues...))
			} else {
				// The validator and the test helper must agree on valid.
				fhirtest.RequireValidR4(t, tc.body)
			}
		})
	}
}

func TestValidateType(t *testing.T) {
	cases := []struct {
		name     string
		body     string
		wantCode []string
	}{
		{"right type", `{"resourceType":"Patient","id":"p1"}`, nil},
		{"wrong type", `{"resourceType":"Practitioner","id":"p1"}`, []string{"invalid"}},
		{"wrong type and invalid", `{"resourceType":"Practitioner","gender":"x"}`, []string{"invalid", "code-invalid"}},
		{"unknown type said once", `{"resourceType":"Patiant"}`, []string{"invalid"}},
		{"missing type said once", `{"gender":"male"}`, []string{"required"}},
		{"not json", `{`, []string{"structure"}},
	}
	v := newValidator(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			issues := v.ValidateType([]byte(tc.body), "Patient")
			var codes []string
			for _, is := range issues {
				codes = append(codes, is.Code)
			}
			assert.Equal(t, tc.wantCode, codes)
			if len(issues) > 0 && tc.wantCode[0] == "invalid" {
				assert.Equal(t, []string{"resourceType"}, issues[0].Expression)
			}
		})
	}
}

func TestValidateCapsIssues(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"resourceType":"Patient"`)
	for i := range 150 {
		fmt.Fprintf(&b, `,"unknown%03d":1`, i)
	}
	b.WriteString("}")
	issues := newValidator(t).Validate([]byte(b.String()))
	require.Len(t, issues, 101)
	assert.Equal(t, "too-costly", issues[100].Code)
	assert.Contains(t, issues[100].Diagnostics, "50 further")
	fhirtest.RequireValidR4(t, fhir.OutcomeJSON(issues...))
}

func TestValidateNestingLimit(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"resourceType":"Patient"`)
	depth := 80
	for range depth {
		b.WriteString(`,"extension":[{"url":"http://x"`)
	}
	for range depth {
		b.WriteString("}]")
	}
	b.WriteString("}")
	issues := newValidator(t).Validate([]byte(b.String()))
	require.NotEmpty(t, issues)
	assert.Equal(t, "structure", issues[0].Code)
}

func TestValidateConcurrent(t *testing.T) {
	v := newValidator(t)
	good, bad := reportFixture(t), withReport(t, map[string]any{"status": "bogus"})
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if n := len(v.Validate(good)); n != 0 {
					errs <- fmt.Sprintf("worker %d: valid report gave %d issues", i, n)
					return
				}
				if n := len(v.Validate(bad)); n != 1 {
					errs <- fmt.Sprintf("worker %d: invalid report gave %d issues", i, n)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func FuzzValidate(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzValidate.
	f.Add(reportFixture(f))
	v := newValidator(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		issues := v.Validate(body)
		for _, is := range issues {
			require.Equal(t, "error", is.Severity)
			require.NotEmpty(t, is.Code)
			require.NotEmpty(t, is.Details)
		}
		if len(issues) > 0 {
			// Whatever the body, the answer is a valid OperationOutcome.
			fhirtest.RequireValidR4(t, fhir.OutcomeJSON(issues...))
		}
	})
}

func BenchmarkValidateDiagnosticReport(b *testing.B) {
	v := newValidator(b)
	body := reportFixture(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if issues := v.Validate(body); len(issues) != 0 {
			b.Fatalf("fixture invalid: %+v", issues)
		}
	}
}
