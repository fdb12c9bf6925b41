package mapping

import (
	"crypto/sha1"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// reportJSON is a valid DiagnosticReport with edits applied: each edit
// sets (or, with a nil value, deletes) a top-level element.
func reportJSON(t testing.TB, edits map[string]any) []byte {
	t.Helper()
	m := map[string]any{
		"resourceType":  "DiagnosticReport",
		"status":        "final",
		"code":          map[string]any{"text": "CT Chest"},
		"basedOn":       []any{map[string]any{"reference": "ServiceRequest/A123456"}},
		"subject":       map[string]any{"reference": "Patient/220000"},
		"issued":        "2025-01-10T14:04:05+11:00",
		"presentedForm": []any{textForm("text/plain; charset=utf-8", "No acute abnormality.")},
	}
	for k, v := range edits {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

func textForm(contentType, text string) map[string]any {
	return map[string]any{"contentType": contentType, "data": b64([]byte(text))}
}

func form(contentType string, data []byte, more ...any) map[string]any {
	f := map[string]any{"contentType": contentType, "data": b64(data)}
	for i := 0; i+1 < len(more); i += 2 {
		f[more[i].(string)] = more[i+1]
	}
	return f
}

func forms(fs ...map[string]any) []any {
	out := make([]any, len(fs))
	for i, f := range fs {
		out[i] = f
	}
	return out
}

func issuedAt() *time.Time {
	t := time.Date(2025, 1, 10, 3, 4, 5, 0, time.UTC)
	return &t
}

func TestReportFromFHIR(t *testing.T) {
	t.Parallel()
	binID, err := BinaryID("A123456", exampleGUID)
	require.NoError(t, err)
	pdfSum := sha1.Sum(testPDF)
	tests := []struct {
		name  string
		edits map[string]any
		want  ReportInput
	}{
		{"plain text final", nil, ReportInput{AppointmentID: "A123456", PatientID: "220000", Status: "final",
			Submission: qubs.ReportSubmission{ReportText: "No acute abnormality.", ReportStatus: "final", ReportFormat: ptr("text/plain"), ReportedAtUTC: issuedAt()}}},
		{"html wins over conclusion; no subject, no issued", map[string]any{
			"subject": nil, "issued": nil, "conclusion": "Normal.",
			"presentedForm": forms(textForm("text/html", "<p>No acute abnormality.</p>")),
		}, ReportInput{AppointmentID: "A123456", Status: "final",
			Submission: qubs.ReportSubmission{ReportText: "<p>No acute abnormality.</p>", ReportStatus: "final", ReportFormat: ptr("text/html")}}},
		{"conclusion alone is text/plain", map[string]any{"presentedForm": nil, "conclusion": "Normal study.", "status": "preliminary"},
			ReportInput{AppointmentID: "A123456", PatientID: "220000", Status: "preliminary",
				Submission: qubs.ReportSubmission{ReportText: "Normal study.", ReportStatus: "preliminary", ReportFormat: ptr("text/plain"), ReportedAtUTC: issuedAt()}}},
		{"first text form wins, BOM dropped, us-ascii", map[string]any{"presentedForm": forms(
			textForm("text/plain;charset=US-ASCII", "\uFEFFFirst."), textForm("text/html", "<p>Second.</p>"))},
			ReportInput{AppointmentID: "A123456", PatientID: "220000", Status: "final",
				Submission: qubs.ReportSubmission{ReportText: "First.", ReportStatus: "final", ReportFormat: ptr("text/plain"), ReportedAtUTC: issuedAt()}}},
		{"text at the QUBS limit", map[string]any{"presentedForm": forms(textForm("text/plain", strings.Repeat("é", qubs.MaxReportTextBytes/2)))},
			ReportInput{AppointmentID: "A123456", PatientID: "220000", Status: "final",
				Submission: qubs.ReportSubmission{ReportText: strings.Repeat("é", qubs.MaxReportTextBytes/2), ReportStatus: "final", ReportFormat: ptr("text/plain"), ReportedAtUTC: issuedAt()}}},
		{"artifacts: inline PDF, Binary DICOM, untitled PDF", map[string]any{"presentedForm": forms(
			form("application/pdf", testPDF, "title", `C:\reports\Final.PDF`, "size", len(testPDF), "hash", sha1b64(testPDF)),
			textForm("text/plain", "Report."),
			map[string]any{"contentType": "application/dicom", "url": "https://bridge.example/fhir/acme/Binary/" + binID, "title": "../sr", "hash": sha1b64(testPDF), "size": 1000},
			form("application/pdf; name=x", testPDF),
		)}, ReportInput{AppointmentID: "A123456", PatientID: "220000", Status: "final",
			Submission: qubs.ReportSubmission{ReportText: "Report.", ReportStatus: "final", ReportFormat: ptr("text/plain"), ReportedAtUTC: issuedAt()},
			Artifacts: []ArtifactInput{
				{Index: 0, FileName: "Final.PDF", ContentType: "application/pdf", Data: testPDF, Size: int64(len(testPDF))},
				{Index: 2, FileName: "sr.dcm", ContentType: "application/dicom", BinaryID: binID, BinaryBase: "https://bridge.example/fhir/acme/", Size: 1000, SHA1: pdfSum[:]},
				{Index: 3, FileName: "report-3.pdf", ContentType: "application/pdf", Data: testPDF, Size: int64(len(testPDF))},
			}}},
		{"relative Binary, base64 with line breaks, DICOM inline", map[string]any{"presentedForm": forms(
			textForm("text/markdown", "# Report"),
			map[string]any{"contentType": "application/dicom", "data": b64(testDICOM)[:20] + "\r\n " + b64(testDICOM)[20:], "title": "sr.dicom"},
			map[string]any{"contentType": "application/pdf", "url": "Binary/" + binID + "/_history/2"},
			map[string]any{"contentType": "application/pdf", "url": "Binary/bin-0a1b2c", "title": "client upload.pdf"},
		)}, ReportInput{AppointmentID: "A123456", PatientID: "220000", Status: "final",
			Submission: qubs.ReportSubmission{ReportText: "# Report", ReportStatus: "final", ReportFormat: ptr("text/markdown"), ReportedAtUTC: issuedAt()},
			Artifacts: []ArtifactInput{
				{Index: 1, FileName: "sr.dicom", ContentType: "application/dicom", Data: testDICOM, Size: int64(len(testDICOM))},
				{Index: 2, FileName: "report-2.pdf", ContentType: "application/pdf", BinaryID: binID},
				{Index: 3, FileName: "client upload.pdf", ContentType: "application/pdf", BinaryID: "bin-0a1b2c"},
			}}},
		{"other basedOn types ignored; absolute ServiceRequest", map[string]any{"basedOn": []any{
			map[string]any{"reference": "CarePlan/1"},
			map[string]any{"reference": "https://bridge.example/fhir/acme/ServiceRequest/b32-iextc", "type": "ServiceRequest"},
		}}, ReportInput{AppointmentID: "A/1", PatientID: "220000", Status: "final",
			Submission: qubs.ReportSubmission{ReportText: "No acute abnormality.", ReportStatus: "final", ReportFormat: ptr("text/plain"), ReportedAtUTC: issuedAt()}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, is := ReportFromJSON(reportJSON(t, tt.edits))
			require.Empty(t, is)
			require.NotNil(t, in)
			assert.Equal(t, tt.want, *in)
		})
	}

	t.Run("status", func(t *testing.T) {
		for fhirStatus, want := range map[string]string{
			"preliminary": "preliminary", "partial": "preliminary",
			"final": "final", "amended": "final", "corrected": "final", "appended": "final",
			"registered": "", "cancelled": "", "entered-in-error": "", "unknown": "",
		} {
			in, is := ReportFromJSON(reportJSON(t, map[string]any{"status": fhirStatus}))
			if want == "" {
				assert.Nil(t, in, fhirStatus)
				assertIssues(t, []Issue{{Code: "value", Status: 422, Expression: "DiagnosticReport.status"}}, is)
				continue
			}
			require.Empty(t, is, fhirStatus)
			assert.Equal(t, want, in.Submission.ReportStatus, fhirStatus)
			assert.Equal(t, fhirStatus, in.Status)
		}
	})
}

func TestReportFromFHIRIssues(t *testing.T) {
	t.Parallel()
	binID, err := BinaryID("A123456", exampleGUID)
	require.NoError(t, err)
	otherBin, err := BinaryID("A999", exampleGUID)
	require.NoError(t, err)
	notPDF := []byte("plain text, not a PDF")
	tooMany := make([]any, qubs.MaxUploadItems+2)
	tooMany[0] = textForm("text/plain", "x")
	for i := 1; i < len(tooMany); i++ {
		tooMany[i] = form("application/pdf", testPDF)
	}
	type is = []Issue
	tests := []struct {
		name  string
		edits map[string]any
		want  is
	}{
		{"no basedOn", map[string]any{"basedOn": nil}, is{{"required", 422, "DiagnosticReport.basedOn", ""}}},
		{"basedOn to other types only", map[string]any{"basedOn": []any{map[string]any{"reference": "CarePlan/1"}}}, is{{"required", 422, "DiagnosticReport.basedOn", ""}}},
		{"non-canonical ServiceRequest id", map[string]any{"basedOn": []any{map[string]any{"reference": "ServiceRequest/b32-ifrdcmrt"}}}, is{{"value", 422, "DiagnosticReport.basedOn[0].reference", ""}}},
		{"ServiceRequest by identifier only", map[string]any{"basedOn": []any{map[string]any{"type": "ServiceRequest", "identifier": map[string]any{"value": "A1"}}}}, is{{"value", 422, "DiagnosticReport.basedOn[0].reference", ""}}},
		{"conditional ServiceRequest", map[string]any{"basedOn": []any{map[string]any{"reference": "ServiceRequest?identifier=A1"}}}, is{{"value", 422, "DiagnosticReport.basedOn[0].reference", ""}}},
		{"relative reference with a path", map[string]any{"basedOn": []any{map[string]any{"reference": "fhir/ServiceRequest/A1"}}}, is{{"value", 422, "DiagnosticReport.basedOn[0].reference", ""}}},
		{"type contradicts reference", map[string]any{"basedOn": []any{map[string]any{"reference": "ServiceRequest/A1", "type": "CarePlan"}}}, is{{"value", 422, "DiagnosticReport.basedOn[0].type", ""}}},
		{"two ServiceRequests", map[string]any{"basedOn": []any{map[string]any{"reference": "ServiceRequest/A1"}, map[string]any{"reference": "ServiceRequest/A2"}}}, is{{"not-supported", 422, "DiagnosticReport.basedOn", ""}}},
		{"subject a Group", map[string]any{"subject": map[string]any{"reference": "Group/1"}}, is{{"value", 422, "DiagnosticReport.subject.reference", ""}}},
		{"subject display only", map[string]any{"subject": map[string]any{"display": "J D"}}, is{{"value", 422, "DiagnosticReport.subject.reference", ""}}},
		{"issued without zone", map[string]any{"issued": "2025-01-10T03:04:05"}, is{{"value", 422, "DiagnosticReport.issued", ""}}},
		{"issued a date", map[string]any{"issued": "2025-01-10"}, is{{"value", 422, "DiagnosticReport.issued", ""}}},
		{"no text at all", map[string]any{"presentedForm": nil}, is{{"required", 422, "DiagnosticReport.conclusion", ""}}},
		{"blank conclusion", map[string]any{"presentedForm": nil, "conclusion": " \n "}, is{{"required", 422, "DiagnosticReport.conclusion", ""}}},
		{"conclusion over the limit", map[string]any{"presentedForm": nil, "conclusion": strings.Repeat("x", qubs.MaxReportTextBytes+1)}, is{{"too-costly", 413, "DiagnosticReport.conclusion", ""}}},
		{"text over the limit", map[string]any{"presentedForm": forms(textForm("text/plain", strings.Repeat("é", qubs.MaxReportTextBytes/2)+"x"))}, is{{"too-costly", 413, "DiagnosticReport.presentedForm[0].data", ""}}},
		{"refused text is not replaced by conclusion", map[string]any{"conclusion": "Normal.", "presentedForm": forms(map[string]any{"contentType": "text/plain", "data": "!!"})}, is{{"value", 400, "DiagnosticReport.presentedForm[0].data", ""}}},
		{"text by url", map[string]any{"presentedForm": forms(map[string]any{"contentType": "text/plain", "url": "Binary/" + binID})}, is{{"not-supported", 422, "DiagnosticReport.presentedForm[0].data", ""}}},
		{"latin-1 text", map[string]any{"presentedForm": forms(textForm("text/plain; charset=iso-8859-1", "x"))}, is{{"not-supported", 422, "DiagnosticReport.presentedForm[0].contentType", ""}}},
		{"text not UTF-8", map[string]any{"presentedForm": forms(form("text/plain", []byte("caf\xe9")))}, is{{"value", 422, "DiagnosticReport.presentedForm[0].data", ""}}},
		{"us-ascii text with UTF-8", map[string]any{"presentedForm": forms(textForm("text/plain; charset=us-ascii", "café"))}, is{{"value", 422, "DiagnosticReport.presentedForm[0].data", ""}}},
		{"blank text", map[string]any{"presentedForm": forms(textForm("text/plain", "\uFEFF \n"))}, is{{"value", 422, "DiagnosticReport.presentedForm[0].data", ""}}},
		{"text size and hash wrong", map[string]any{"presentedForm": forms(form("text/plain", []byte("x"), "size", 2, "hash", sha1b64([]byte("y"))))}, is{
			{"value", 422, "DiagnosticReport.presentedForm[0].size", ""}, {"value", 422, "DiagnosticReport.presentedForm[0].hash", ""}}},
		{"text/xml", map[string]any{"presentedForm": forms(textForm("text/xml", "<r/>"))}, is{
			{"not-supported", 422, "DiagnosticReport.presentedForm[0].contentType", ""}, {"required", 422, "DiagnosticReport.conclusion", ""}}},
		{"image", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), form("image/png", []byte("png")))}, is{{"not-supported", 422, "DiagnosticReport.presentedForm[1].contentType", ""}}},
		{"no content type", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), map[string]any{"data": b64(testPDF)})}, is{{"required", 422, "DiagnosticReport.presentedForm[1].contentType", ""}}},
		{"malformed content type", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), form("application/pdf;;", testPDF))}, is{{"value", 422, "DiagnosticReport.presentedForm[1].contentType", ""}}},
		{"PDF over 2 MiB", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), form("application/pdf", append(append([]byte{}, testPDF...), make([]byte, qubs.MaxUploadBytes)...)))}, is{{"too-costly", 413, "DiagnosticReport.presentedForm[1].data", ""}}},
		{"PDF that is not one", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), form("application/pdf", notPDF))}, is{{"value", 422, "DiagnosticReport.presentedForm[1].data", ""}}},
		{"DICOM that is not one", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), form("application/dicom", testPDF))}, is{{"value", 422, "DiagnosticReport.presentedForm[1].data", ""}}},
		{"empty PDF", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), form("application/pdf", nil))}, is{{"value", 422, "DiagnosticReport.presentedForm[1].data", ""}}},
		{"PDF bad size, malformed hash", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), form("application/pdf", testPDF, "size", 3, "hash", "abc"))}, is{
			{"value", 422, "DiagnosticReport.presentedForm[1].size", ""}, {"value", 400, "DiagnosticReport.presentedForm[1].hash", ""}}},
		{"PDF hash of other bytes", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), form("application/pdf", testPDF, "hash", sha1b64(notPDF)))}, is{{"value", 422, "DiagnosticReport.presentedForm[1].hash", ""}}},
		{"PDF elsewhere", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), map[string]any{"contentType": "application/pdf", "url": "https://example.com/r.pdf"})}, is{{"not-supported", 422, "DiagnosticReport.presentedForm[1].url", ""}}},
		{"url to another type", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), map[string]any{"contentType": "application/pdf", "url": "DocumentReference/" + binID})}, is{{"not-supported", 422, "DiagnosticReport.presentedForm[1].url", ""}}},
		{"Binary of another appointment", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), map[string]any{"contentType": "application/pdf", "url": "Binary/" + otherBin})}, is{{"value", 422, "DiagnosticReport.presentedForm[1].url", ""}}},
		{"Binary said to be too large", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), map[string]any{"contentType": "application/pdf", "url": "Binary/" + binID, "size": qubs.MaxUploadBytes + 1})}, is{{"too-costly", 413, "DiagnosticReport.presentedForm[1].size", ""}}},
		{"PDF with neither data nor url", map[string]any{"presentedForm": forms(textForm("text/plain", "x"), map[string]any{"contentType": "application/pdf", "title": "r.pdf"})}, is{{"required", 422, "DiagnosticReport.presentedForm[1].data", ""}}},
		{"too many artifacts", map[string]any{"presentedForm": tooMany}, is{{"too-costly", 422, "DiagnosticReport.presentedForm", ""}}},
		{"interpreter not contained", map[string]any{"resultsInterpreter": []any{map[string]any{"reference": "#nobody"}}}, is{{"invalid", 422, "DiagnosticReport.resultsInterpreter[0].reference", ""}}},
		{"role to a practitioner not contained", map[string]any{
			"contained":          []any{map[string]any{"resourceType": "PractitionerRole", "id": "r", "practitioner": map[string]any{"reference": "#p"}}},
			"resultsInterpreter": []any{map[string]any{"reference": "#r"}},
		}, is{{"invalid", 422, "DiagnosticReport.contained[0].practitioner.reference", ""}}},
		{"contained practitioner unreadable", map[string]any{
			"contained":          []any{map[string]any{"resourceType": "Practitioner", "id": "p", "gender": "F"}},
			"resultsInterpreter": []any{map[string]any{"reference": "#p"}},
		}, is{{"structure", 400, "DiagnosticReport.contained[0]", ""}}},
		{"everything wrong at once", map[string]any{
			"status": "cancelled", "basedOn": nil, "subject": map[string]any{"reference": "Device/1"}, "issued": "yesterday",
			"presentedForm": forms(map[string]any{"contentType": "text/plain", "data": "%%%"}, form("image/jpeg", []byte("x")), form("application/pdf", notPDF)),
		}, is{
			{"value", 422, "DiagnosticReport.status", ""},
			{"required", 422, "DiagnosticReport.basedOn", ""},
			{"value", 422, "DiagnosticReport.subject.reference", ""},
			{"value", 400, "DiagnosticReport.presentedForm[0].data", ""},
			{"not-supported", 422, "DiagnosticReport.presentedForm[1].contentType", ""},
			{"value", 422, "DiagnosticReport.presentedForm[2].data", ""},
			{"value", 422, "DiagnosticReport.issued", ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, got := ReportFromJSON(reportJSON(t, tt.edits))
			assert.Nil(t, in)
			assertIssues(t, tt.want, got)
		})
	}
	t.Run("not a DiagnosticReport", func(t *testing.T) {
		for _, body := range []string{`{`, `[]`, `{"resourceType":"Observation"}`, `{"resourceType":"DiagnosticReport","status":"bogus"}`, `{"resourceType":"DiagnosticReport","contained":{}}`} {
			in, got := ReportFromJSON([]byte(body))
			assert.Nil(t, in, body)
			assertIssues(t, []Issue{{Code: "structure", Status: 400, Expression: "DiagnosticReport"}}, got)
		}
		in, got := ReportFromFHIR(nil)
		assert.Nil(t, in)
		assertIssues(t, []Issue{{Code: "structure", Status: 400, Expression: "DiagnosticReport"}}, got)
	})
}

func TestReportInterpreter(t *testing.T) {
	t.Parallel()
	medicare := func(v string) map[string]any { return map[string]any{"system": SystemMedicareProvider, "value": v} }
	email := func(v string) map[string]any { return map[string]any{"system": "email", "value": v} }
	type want struct{ name, provider, email string }
	tests := []struct {
		name      string
		contained []any
		refs      []any
		want      want
	}{
		{"contained practitioner, name parts", []any{map[string]any{
			"resourceType": "Practitioner", "id": "p",
			"name":       []any{map[string]any{"use": "old", "text": "Old Name"}, map[string]any{"prefix": []any{"Dr"}, "given": []any{"Rory", "J"}, "family": "Smith", "suffix": []any{"FRANZCR"}}},
			"identifier": []any{map[string]any{"system": "http://example.org", "value": "x"}, medicare("1234567A")},
			"telecom":    []any{map[string]any{"system": "phone", "value": "1"}, email("mailto:rory@example.com")},
		}}, []any{map[string]any{"reference": "#p"}}, want{"Dr Rory J Smith FRANZCR", "1234567A", "rory@example.com"}},
		{"role first: its provider number and email win", []any{
			map[string]any{"resourceType": "Practitioner", "id": "p", "name": []any{map[string]any{"text": "Dr Rory Smith", "family": "Smith"}},
				"identifier": []any{medicare("1111111A")}, "telecom": []any{email("home@example.com")}},
			map[string]any{"resourceType": "PractitionerRole", "id": "r", "practitioner": map[string]any{"reference": "#p", "display": "ignored"},
				"identifier": []any{medicare("2222222B")}, "telecom": []any{email("work@example.com")}},
		}, []any{map[string]any{"reference": "#r"}}, want{"Dr Rory Smith", "2222222B", "work@example.com"}},
		{"role to a practitioner by display", []any{
			map[string]any{"resourceType": "PractitionerRole", "id": "r", "practitioner": map[string]any{"reference": "Practitioner/9", "display": "Dr Lee"},
				"identifier": []any{medicare("3333333C")}},
		}, []any{map[string]any{"reference": "#r"}}, want{"Dr Lee", "3333333C", ""}},
		{"reference display and identifier only", nil, []any{map[string]any{"display": "Dr Ng", "identifier": medicare("4444444D")}},
			want{"Dr Ng", "4444444D", ""}},
		{"organisations skipped, bare literal skipped", []any{
			map[string]any{"resourceType": "Organization", "id": "o"},
		}, []any{
			map[string]any{"reference": "#o"},
			map[string]any{"reference": "Organization/1", "display": "Imaging Co"},
			map[string]any{"type": "CareTeam", "display": "Team"},
			map[string]any{"reference": "Practitioner/1"},
			map[string]any{"reference": "https://x.example/fhir/Practitioner/2", "display": "Dr Second", "identifier": map[string]any{"system": "http://other", "value": "z"}},
			map[string]any{"display": "Dr Third"},
		}, want{"Dr Second", "", ""}},
		{"contained practitioner without name takes the display", []any{
			map[string]any{"resourceType": "Practitioner", "id": "p", "telecom": []any{email("x@example.com")}},
		}, []any{map[string]any{"reference": "#p", "display": "Dr Display"}}, want{"Dr Display", "", "x@example.com"}},
		{"none", nil, nil, want{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			edits := map[string]any{"resultsInterpreter": tt.refs}
			if tt.refs == nil {
				edits["resultsInterpreter"] = nil
			}
			if tt.contained != nil {
				edits["contained"] = tt.contained
			}
			in, is := ReportFromJSON(reportJSON(t, edits))
			require.Empty(t, is)
			s := in.Submission
			assert.Equal(t, tt.want, want{val(s.InterpretingClinicianName), val(s.InterpretingClinicianProviderNumber), val(s.InterpretingClinicianEmail)})
			for _, p := range []*string{s.InterpretingClinicianName, s.InterpretingClinicianProviderNumber, s.InterpretingClinicianEmail} {
				if p != nil {
					assert.NotEmpty(t, *p, "empty strings are left out")
				}
			}
		})
	}

	t.Run("ReportFromFHIR with contained passed separately", func(t *testing.T) {
		body := reportJSON(t, map[string]any{
			"contained":          []any{map[string]any{"resourceType": "Practitioner", "id": "p", "name": []any{map[string]any{"text": "Dr A"}}}},
			"resultsInterpreter": []any{map[string]any{"reference": "#p"}},
		})
		var dr fhir.DiagnosticReport
		require.NoError(t, json.Unmarshal(body, &dr))
		contained, err := ContainedResources(body)
		require.NoError(t, err)
		in, is := ReportFromFHIR(&dr, contained...)
		require.Empty(t, is)
		assert.Equal(t, "Dr A", val(in.Submission.InterpretingClinicianName))
		// Without them, "#p" cannot be resolved: an issue, not a guess.
		_, is = ReportFromFHIR(&dr)
		assertIssues(t, []Issue{{Code: "invalid", Status: 422, Expression: "DiagnosticReport.resultsInterpreter[0].reference"}}, is)
	})
}

func TestArtifactFileName(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("ü", 300)
	tests := []struct{ title, ct, want string }{
		{"final.pdf", qubs.ContentTypePDF, "final.pdf"},
		{"FINAL.PDF", qubs.ContentTypePDF, "FINAL.PDF"},
		{"Final report", qubs.ContentTypePDF, "Final report.pdf"},
		{"report.dcm", qubs.ContentTypePDF, "report.dcm.pdf"},
		{"sr.dicom", qubs.ContentTypeDICOM, "sr.dicom"},
		{"sr", qubs.ContentTypeDICOM, "sr.dcm"},
		{"../../etc/passwd", qubs.ContentTypePDF, "passwd.pdf"},
		{`C:\Users\rs\final.pdf`, qubs.ContentTypePDF, "final.pdf"},
		{"dir/", qubs.ContentTypePDF, "report-4.pdf"},
		{"..", qubs.ContentTypePDF, "report-4.pdf"},
		{"  \t ", qubs.ContentTypeDICOM, "report-4.dcm"},
		{"", qubs.ContentTypePDF, "report-4.pdf"},
		{"a\x00b\u0085c.pdf", qubs.ContentTypePDF, "abc.pdf"},
		{long + ".pdf", qubs.ContentTypePDF, strings.Repeat("ü", qubs.MaxFileNameLength-4) + ".pdf"},
		{long, qubs.ContentTypeDICOM, strings.Repeat("ü", qubs.MaxFileNameLength-4) + ".dcm"},
		{strings.Repeat("x", 251) + ".dicom", qubs.ContentTypeDICOM, strings.Repeat("x", 249) + ".dicom"},
	}
	for _, tt := range tests {
		got := artifactFileName(tt.title, tt.ct, 4)
		assert.Equal(t, tt.want, got, "%q", tt.title)
		assert.LessOrEqual(t, utf8.RuneCountInString(got), qubs.MaxFileNameLength)
		assert.Equal(t, tt.ct, ContentTypeForFileName(got), "the name gives the type back")
	}
}

// decorateCase is one golden input of DecorateReport.
type decorateCase struct {
	ID          string          `json:"id"`
	Version     int             `json:"version"`
	LastUpdated time.Time       `json:"lastUpdated"`
	Delivery    ReportDelivery  `json:"delivery"`
	Stored      json.RawMessage `json:"stored"`
	// AppointmentID is the stored report's appointment; its ImagingStudy
	// is added to imagingStudy.
	AppointmentID string `json:"appointmentId"`
}

// studyID is the id of the case's ImagingStudy, "" without an appointment.
func (c decorateCase) studyID(t testing.TB) string {
	if c.AppointmentID == "" {
		return ""
	}
	id, err := ServiceRequestID(c.AppointmentID)
	require.NoError(t, err)
	return id
}

// TestGoldenReports decorates each testdata/reports/<case>.stored.json
// and compares the result with <case>.fhir.json.
func TestGoldenReports(t *testing.T) {
	t.Parallel()
	runGolden(t, "reports", ".stored.json", 3, func(t *testing.T, in []byte) any {
		var c decorateCase
		require.NoError(t, json.Unmarshal(in, &c))
		out, err := DecorateReport(c.Stored, c.ID, c.Version, c.LastUpdated, c.Delivery, c.studyID(t))
		require.NoError(t, err)
		return json.RawMessage(out)
	}, func(t *testing.T, in, golden []byte) {
		var c decorateCase
		require.NoError(t, json.Unmarshal(in, &c))
		requireValidJSON(t, golden)
		checkDecorated(t, c, golden)
	})
}

// checkDecorated checks a decorated report against its input: the bridge's
// elements set, everything else as the client sent it.
func checkDecorated(t testing.TB, c decorateCase, out []byte) {
	t.Helper()
	var got, stored map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(out, &got))
	require.NoError(t, json.Unmarshal(c.Stored, &stored))
	var dr fhir.DiagnosticReport
	require.NoError(t, json.Unmarshal(out, &dr))
	assert.Equal(t, c.ID, val(dr.Id))
	require.NotNil(t, dr.Meta)
	assert.Equal(t, c.Version, mustAtoi(t, val(dr.Meta.VersionId)))
	lu, err := time.Parse(time.RFC3339Nano, val(dr.Meta.LastUpdated))
	require.NoError(t, err)
	assert.True(t, lu.Equal(c.LastUpdated))

	var guids []string
	for _, id := range dr.Identifier {
		if val(id.System) == SystemReportGUID {
			guids = append(guids, val(id.Value))
		}
	}
	if c.Delivery.ReportGUID != "" {
		assert.Equal(t, []string{c.Delivery.ReportGUID}, guids)
	} else {
		assert.Empty(t, guids)
	}
	if id := c.studyID(t); id != "" {
		require.NotEmpty(t, dr.ImagingStudy)
		last := dr.ImagingStudy[len(dr.ImagingStudy)-1]
		assert.Equal(t, "ImagingStudy/"+id, val(last.Reference), "the study's ImagingStudy is referenced")
	}
	ext := extensions(dr.Extension)
	require.Len(t, ext[ExtDeliveryState], 1)
	assert.Equal(t, c.Delivery.State, val(ext[ExtDeliveryState][0].ValueCode))
	if c.Delivery.DeliveredAt != nil {
		require.Len(t, ext[ExtDeliveredAt], 1)
		at, err := time.Parse(time.RFC3339Nano, val(ext[ExtDeliveredAt][0].ValueInstant))
		require.NoError(t, err)
		assert.True(t, at.Equal(*c.Delivery.DeliveredAt))
	} else {
		assert.Empty(t, ext[ExtDeliveredAt])
	}
	for k, v := range stored {
		switch k {
		case "id", "meta", "identifier", "extension", "imagingStudy":
			continue
		}
		assert.JSONEq(t, string(v), string(got[k]), "element %s kept as sent", k)
	}
	for k := range got {
		switch k {
		case "id", "meta", "identifier", "extension", "imagingStudy":
			continue
		}
		assert.Contains(t, stored, k, "element %s appeared", k)
	}
}

func mustAtoi(t testing.TB, s string) int {
	t.Helper()
	var n int
	require.NoError(t, json.Unmarshal([]byte(s), &n))
	return n
}

func TestDecorateReportErrors(t *testing.T) {
	t.Parallel()
	ok := []byte(`{"resourceType":"DiagnosticReport","status":"final","code":{"text":"x"}}`)
	now := time.Date(2025, 1, 10, 3, 4, 5, 0, time.UTC)
	pending := ReportDelivery{State: DeliveryPending}
	tests := []struct {
		name     string
		stored   []byte
		id       string
		version  int
		updated  time.Time
		delivery ReportDelivery
	}{
		{"bad id", ok, "a/b", 1, now, pending},
		{"version 0", ok, "r1", 0, now, pending},
		{"zero time", ok, "r1", 1, time.Time{}, pending},
		{"unknown state", ok, "r1", 1, now, ReportDelivery{State: "sent"}},
		{"guid with a control character", ok, "r1", 1, now, ReportDelivery{State: DeliveryDelivered, ReportGUID: "a\x00"}},
		{"not JSON", []byte(`{`), "r1", 1, now, pending},
		{"an array", []byte(`[]`), "r1", 1, now, pending},
		{"another resource", []byte(`{"resourceType":"Observation"}`), "r1", 1, now, pending},
		{"duplicate member", []byte(`{"resourceType":"DiagnosticReport","status":"final","status":"amended"}`), "r1", 1, now, pending},
		{"trailing data", append(append([]byte{}, ok...), " {}"...), "r1", 1, now, pending},
		{"meta not an object", []byte(`{"resourceType":"DiagnosticReport","meta":[]}`), "r1", 1, now, pending},
		{"identifier not an array", []byte(`{"resourceType":"DiagnosticReport","identifier":{}}`), "r1", 1, now, pending},
		{"extension not an array", []byte(`{"resourceType":"DiagnosticReport","extension":"x"}`), "r1", 1, now, pending},
		{"year past 9999", ok, "r1", 1, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), pending},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := DecorateReport(tt.stored, tt.id, tt.version, tt.updated, tt.delivery, "")
			require.Error(t, err)
			assert.Nil(t, out)
		})
	}
	t.Run("minimal pending report", func(t *testing.T) {
		out, err := DecorateReport(ok, "r1", 1, now, pending, "")
		require.NoError(t, err)
		assert.JSONEq(t, `{"resourceType":"DiagnosticReport","id":"r1","meta":{"versionId":"1","lastUpdated":"2025-01-10T03:04:05Z"},
			"status":"final","code":{"text":"x"},
			"extension":[{"url":"`+ExtDeliveryState+`","valueCode":"pending"}]}`, string(out))
		requireValidJSON(t, out)
	})
	t.Run("null meta, identifier and extension", func(t *testing.T) {
		out, err := DecorateReport([]byte(`{"resourceType":"DiagnosticReport","meta":null,"identifier":null,"extension":null,"status":"final","code":{"text":"x"}}`),
			"r1", 1, now, ReportDelivery{State: DeliveryDelivered, ReportGUID: "g1", DeliveredAt: &now}, "")
		require.NoError(t, err)
		requireValidJSON(t, out)
		assert.Contains(t, string(out), `"versionId":"1"`)
		assert.Contains(t, string(out), `"value":"g1"`)
	})
	t.Run("a client's delivery claims are dropped", func(t *testing.T) {
		forged := []byte(`{"resourceType":"DiagnosticReport","status":"final","code":{"text":"x"},
			"identifier":[{"system":"` + SystemReportGUID + `","value":"forged"}],
			"extension":[{"url":"` + ExtDeliveryState + `","valueCode":"delivered"},{"url":"` + ExtDeliveredAt + `","valueInstant":"2025-01-01T00:00:00Z"}]}`)
		out, err := DecorateReport(forged, "r1", 2, now, pending, "A1")
		require.NoError(t, err)
		assert.NotContains(t, string(out), "forged")
		assert.NotContains(t, string(out), `"identifier"`, "an emptied array is left out")
		assert.NotContains(t, string(out), ExtDeliveredAt)
		requireValidJSON(t, out)
	})
	t.Run("the study's ImagingStudy joins the client's, once", func(t *testing.T) {
		sent := []byte(`{"resourceType":"DiagnosticReport","status":"final","code":{"text":"x"},
			"imagingStudy":[{"reference":"ImagingStudy/pacs-1"},{"reference":"ImagingStudy/A1"}]}`)
		out, err := DecorateReport(sent, "r1", 1, now, pending, "A1")
		require.NoError(t, err)
		requireValidJSON(t, out)
		var dr fhir.DiagnosticReport
		require.NoError(t, json.Unmarshal(out, &dr))
		var refs []string
		for _, r := range dr.ImagingStudy {
			refs = append(refs, val(r.Reference))
		}
		assert.Equal(t, []string{"ImagingStudy/pacs-1", "ImagingStudy/A1"}, refs)
		_, err = DecorateReport(sent, "r1", 1, now, pending, "not an id!")
		assert.Error(t, err)
	})
}

// FuzzReportFromFHIR feeds arbitrary bodies to ReportFromJSON: it must
// never panic, return either an input or issues, and only well-formed
// ones of either.
func FuzzReportFromFHIR(f *testing.F) {
	binID, err := BinaryID("A123456", exampleGUID)
	require.NoError(f, err)
	f.Add(reportJSON(f, nil))
	f.Add(reportJSON(f, map[string]any{"presentedForm": nil, "conclusion": "Normal."}))
	f.Add(reportJSON(f, map[string]any{"status": "amended", "presentedForm": forms(
		textForm("text/html; charset=utf-8", "<b>x</b>"), form("application/pdf", testPDF, "title", "r.pdf", "hash", sha1b64(testPDF)),
		map[string]any{"contentType": "application/dicom", "url": "Binary/" + binID}, form("application/dicom", testDICOM))}))
	f.Add(reportJSON(f, map[string]any{
		"contained": []any{
			map[string]any{"resourceType": "PractitionerRole", "id": "r", "practitioner": map[string]any{"reference": "#p"}, "identifier": []any{map[string]any{"system": SystemMedicareProvider, "value": "1"}}},
			map[string]any{"resourceType": "Practitioner", "id": "p", "name": []any{map[string]any{"given": []any{"A"}}}},
		},
		"resultsInterpreter": []any{map[string]any{"reference": "#r"}},
	}))
	f.Add(reportJSON(f, map[string]any{"status": "registered", "basedOn": nil, "presentedForm": forms(form("image/png", nil), map[string]any{"contentType": ";", "data": "%"})}))
	f.Add([]byte(`{"resourceType":"DiagnosticReport","contained":[{"id":"x"},{"resourceType":"PractitionerRole","id":"x"}],"resultsInterpreter":[{"reference":"#x"}]}`))
	f.Add([]byte(`{"resourceType":"DiagnosticReport","presentedForm":[{"contentType":"text/plain","data":"===="}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		in, issues := ReportFromJSON(body)
		if (in == nil) == (len(issues) == 0) {
			t.Fatalf("input %v with %d issues", in != nil, len(issues))
		}
		for _, is := range issues {
			if is.Code == "" || is.Message == "" || !strings.HasPrefix(is.Expression, "DiagnosticReport") {
				t.Fatalf("malformed issue %+v", is)
			}
			switch is.Status {
			case 400, 413, 422:
			default:
				t.Fatalf("issue with status %d", is.Status)
			}
		}
		if in == nil {
			return
		}
		s := in.Submission
		if s.ReportStatus != qubs.ReportPreliminary && s.ReportStatus != qubs.ReportFinal {
			t.Fatalf("report status %q", s.ReportStatus)
		}
		if strings.TrimSpace(s.ReportText) == "" || len(s.ReportText) > qubs.MaxReportTextBytes || !utf8.ValidString(s.ReportText) {
			t.Fatalf("report text of %d bytes, valid UTF-8 %v", len(s.ReportText), utf8.ValidString(s.ReportText))
		}
		if s.ReportFormat == nil || !reportTextTypes[*s.ReportFormat] {
			t.Fatalf("report format %v", s.ReportFormat)
		}
		if in.AppointmentID == "" {
			t.Fatal("no appointment")
		}
		if len(in.Artifacts) > qubs.MaxUploadItems {
			t.Fatalf("%d artifacts", len(in.Artifacts))
		}
		for _, a := range in.Artifacts {
			if (a.Data == nil) == (a.BinaryID == "") || len(a.Data) > qubs.MaxUploadBytes ||
				ContentTypeForFileName(a.FileName) != a.ContentType || utf8.RuneCountInString(a.FileName) > qubs.MaxFileNameLength ||
				strings.ContainsAny(a.FileName, `/\`) {
				t.Fatalf("malformed artifact %+v", a)
			}
		}
	})
}

// FuzzDecorateReport feeds arbitrary stored JSON to DecorateReport: it
// must never panic, and what it returns must be a JSON object with the
// bridge's id, version and delivery state, every other member kept.
func FuzzDecorateReport(f *testing.F) {
	f.Add([]byte(`{"resourceType":"DiagnosticReport","status":"final","code":{"text":"x"}}`))
	f.Add([]byte(`{"resourceType":"DiagnosticReport","meta":null,"identifier":[null,1,{"system":1}],"extension":[{"url":"` + ExtDeliveryState + `"}]}`))
	f.Add([]byte(` {"extension":[],"resourceType":"DiagnosticReport","a":{"b":[1,2]}} `))
	f.Add([]byte(`{"resourceType":"DiagnosticReport","resourceType":"DiagnosticReport"}`))
	f.Add([]byte(`{"resourceType":"DiagnosticReport"}{}`))
	now := time.Date(2025, 1, 10, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, stored []byte) {
		out, err := DecorateReport(stored, "r1", 2, now, ReportDelivery{State: DeliveryDelivered, ReportGUID: "g", DeliveredAt: &now}, "A1")
		if err != nil {
			return
		}
		var got, in map[string]json.RawMessage
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("output is not a JSON object: %v\n%s", err, out)
		}
		if err := json.Unmarshal(stored, &in); err != nil {
			t.Fatalf("accepted input that is not a JSON object: %v", err)
		}
		if string(got["id"]) != `"r1"` || !strings.Contains(string(got["meta"]), `"versionId":"2"`) ||
			!strings.Contains(string(got["extension"]), ExtDeliveryState) || !strings.Contains(string(got["identifier"]), SystemReportGUID) {
			t.Fatalf("bridge elements missing: %s", out)
		}
		for k, v := range in {
			switch k {
			case "id", "meta", "identifier", "extension":
				continue
			}
			var a, b any
			if json.Unmarshal(v, &a) != nil || json.Unmarshal(got[k], &b) != nil || !assert.ObjectsAreEqual(a, b) {
				t.Fatalf("member %q changed: %s -> %s", k, v, got[k])
			}
		}
	})
}
