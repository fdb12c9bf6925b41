package mapping

import (
	"crypto/sha1"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// The server decodes presentedForm data while reading the request; the
// mapping must then answer exactly as it does on the inline base64.
func TestReportFromJSONInline(t *testing.T) {
	t.Parallel()
	file := []byte("%PDF-1.4 inline artifact")
	text := []byte("No acute abnormality.")
	cases := []struct {
		name   string
		inline map[int]*InlineData
		status int // 0: mapped
		expr   string
	}{
		{"decoded", map[int]*InlineData{0: {Data: text}, 1: {Data: file}}, 0, ""},
		{"invalid", map[int]*InlineData{0: {Data: text}, 1: {Invalid: true}}, 400, "DiagnosticReport.presentedForm[1].data"},
		{"too big", map[int]*InlineData{0: {Data: text}, 1: {TooBig: true}}, 413, "DiagnosticReport.presentedForm[1].data"},
		{"empty", map[int]*InlineData{0: {Data: text}, 1: {Data: []byte{}}}, 422, "DiagnosticReport.presentedForm[1].data"},
		{"not a PDF", map[int]*InlineData{0: {Data: text}, 1: {Data: make([]byte, len(file))}}, 422, "DiagnosticReport.presentedForm[1].data"},
		{"text too big", map[int]*InlineData{0: {TooBig: true}, 1: {Data: file}}, 413, "DiagnosticReport.presentedForm[0].data"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The data in the body is a placeholder: only the decoded
			// values count.
			body := reportJSON(t, map[string]any{"presentedForm": []any{
				map[string]any{"contentType": "text/plain", "data": "AA=="},
				map[string]any{"contentType": "application/pdf", "data": "AA==", "size": len(file)},
			}})
			in, is := ReportFromJSONInline(body, tc.inline)
			if tc.status == 0 {
				require.Empty(t, is)
				assert.Equal(t, string(text), in.Submission.ReportText)
				require.Len(t, in.Artifacts, 1)
				assert.Equal(t, file, in.Artifacts[0].Data)
				assert.Equal(t, 1, in.Artifacts[0].Index)
				return
			}
			require.NotEmpty(t, is)
			assert.Equal(t, tc.status, is[0].Status)
			assert.Equal(t, tc.expr, is[0].Expression)
		})
	}
}

func TestExternalizeArtifacts(t *testing.T) {
	t.Parallel()
	file := []byte("%PDF-1.4 artifact")
	sum := sha1.Sum(file)
	body := reportJSON(t, map[string]any{"presentedForm": []any{
		textForm("text/plain", "report"),
		map[string]any{"contentType": qubs.ContentTypePDF, "title": "r.pdf", "data": b64(file), "url": "urn:x", "size": 3},
	}})
	out, err := ExternalizeArtifacts(body, map[int]AttachmentRef{1: {URL: "https://b/fhir/acme/Binary/dra-1", Size: int64(len(file)), SHA1: sum[:]}})
	require.NoError(t, err)
	var got struct {
		PresentedForm []map[string]any `json:"presentedForm"`
		Status        string           `json:"status"`
	}
	require.NoError(t, json.Unmarshal(out, &got))
	assert.Equal(t, "final", got.Status, "the rest is kept")
	require.Len(t, got.PresentedForm, 2)
	assert.Equal(t, b64([]byte("report")), got.PresentedForm[0]["data"], "text stays inline")
	assert.Equal(t, map[string]any{"contentType": qubs.ContentTypePDF, "title": "r.pdf",
		"url": "https://b/fhir/acme/Binary/dra-1", "size": float64(len(file)), "hash": b64(sum[:])}, got.PresentedForm[1])

	_, err = ExternalizeArtifacts(body, map[int]AttachmentRef{2: {}})
	assert.Error(t, err)
}
