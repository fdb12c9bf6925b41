package mapping

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// documentCase is one golden input of DocumentReferenceFromAttachment.
type documentCase struct {
	AppointmentID string          `json:"appointmentId"`
	PatientID     string          `json:"patientId"`
	BinaryBase    string          `json:"binaryBase"`
	Attachment    qubs.Attachment `json:"attachment"`
}

func (c documentCase) binaryURL(t testing.TB) string {
	if c.BinaryBase == "" {
		return ""
	}
	id, err := BinaryID(c.AppointmentID, c.Attachment.GUID)
	require.NoError(t, err)
	return c.BinaryBase + "Binary/" + id
}

// TestGoldenDocuments maps each testdata/documents/<case>.qubs.json and
// compares the DocumentReference with <case>.fhir.json; the golden output
// must be valid R4 and give the attachment back, the presigned url (left
// out on purpose) aside.
func TestGoldenDocuments(t *testing.T) {
	t.Parallel()
	runGolden(t, "documents", ".qubs.json", 5, func(t *testing.T, in []byte) any {
		var c documentCase
		require.NoError(t, json.Unmarshal(in, &c))
		d, err := DocumentReferenceFromAttachment(c.AppointmentID, c.PatientID, c.Attachment, c.binaryURL(t))
		require.NoError(t, err)
		return d
	}, func(t *testing.T, in, golden []byte) {
		var c documentCase
		require.NoError(t, json.Unmarshal(in, &c))
		requireValidJSON(t, golden)
		var d fhir.DocumentReference
		require.NoError(t, json.Unmarshal(golden, &d))
		appt, patient, url, a := recoverAttachment(t, d)
		assert.Equal(t, c.AppointmentID, appt)
		assert.Equal(t, c.PatientID, patient)
		assert.Equal(t, c.binaryURL(t), url)
		want := c.Attachment
		want.URL, want.URLExpiresAtUTC = nil, nil
		if want.AddedBy != nil && *want.AddedBy == (qubs.UserSummary{}) {
			want.AddedBy = nil // {} carries nothing: documented
		}
		sameJSON(t, want, a, "the attachment read back from FHIR")
	})
}

// recoverAttachment is the test-only inverse of
// DocumentReferenceFromAttachment.
func recoverAttachment(t testing.TB, d fhir.DocumentReference) (appt, patientID, binaryURL string, a qubs.Attachment) {
	t.Helper()
	orig := originals(t, d.Extension)
	require.NotNil(t, d.Id)
	appt, guid, err := ParseDocumentReferenceID(*d.Id)
	require.NoError(t, err)
	assert.Equal(t, fhir.DocumentReferenceStatusCurrent, d.Status)
	require.Len(t, d.Identifier, 1)
	assert.Equal(t, SystemAttachmentGUID, val(d.Identifier[0].System))
	a.GUID = restored(t, orig, "guid", d.Identifier[0].Value)
	assert.Equal(t, guid, a.GUID, "the id holds the guid")

	require.NotNil(t, d.Context)
	srID, err := ServiceRequestID(appt)
	require.NoError(t, err)
	assert.Equal(t, []fhir.Reference{serviceRequestRef(srID)}, d.Context.Related)
	if d.Subject != nil {
		p, ok := strings.CutPrefix(val(d.Subject.Reference), "Patient/")
		require.True(t, ok)
		patientID = p
	}
	if len(d.Category) > 0 {
		require.Len(t, d.Category, 1)
		a.Category = restored(t, orig, "category", d.Category[0].Text)
		require.NotNil(t, d.Type)
		assert.Equal(t, d.Category[0].Text, d.Type.Text)
	} else {
		assert.Nil(t, d.Type)
	}
	if d.Meta != nil {
		a.LastModifiedDateTime = restoredTime(t, orig, "lastModifiedDateTime", d.Meta.LastUpdated)
	} else {
		a.LastModifiedDateTime = restoredTime(t, orig, "lastModifiedDateTime", nil)
	}
	a.AddedDateTime = restoredTime(t, orig, "addedDateTime", d.Date)
	if len(d.Author) > 0 {
		require.Len(t, d.Author, 1)
		a.AddedBy = recoverUser(t, orig, "addedBy", &d.Author[0])
	}
	require.Len(t, d.Content, 1)
	att := d.Content[0].Attachment
	a.FileName = restored(t, orig, "fileName", att.Title)
	assert.Equal(t, ContentTypeForFileName(a.FileName), val(att.ContentType))
	assert.Equal(t, d.Date, att.Creation, "creation is the date added")
	binaryURL = val(att.Url)
	assert.Empty(t, orig, "ExtOriginal of fields the inverse did not read")
	return appt, patientID, binaryURL, a
}

func TestDocumentTypes(t *testing.T) {
	t.Parallel()
	codes := func(cc *fhir.CodeableConcept) []string {
		var out []string
		for _, c := range cc.Coding {
			out = append(out, val(c.System)+"|"+val(c.Code))
		}
		return out
	}
	assert.Equal(t, []string{"http://loinc.org|57133-1", "http://loinc.org|107903-7"}, codes(docType("Referral")))
	assert.Equal(t, []string{"http://loinc.org|57133-1", "http://loinc.org|107903-7"}, codes(docType("referral")))
	assert.Equal(t, []string{"http://loinc.org|18748-4"}, codes(docType("report")))
	assert.Nil(t, codes(docType("Worksheet")))
	assert.Equal(t, "Worksheet", val(docType("Worksheet").Text))
	assert.Nil(t, docType(""))
}

func TestDocumentReferenceFromAttachmentErrors(t *testing.T) {
	t.Parallel()
	a := qubs.Attachment{GUID: exampleGUID}
	_, err := DocumentReferenceFromAttachment(strings.Repeat("A", 40), "", a, "")
	require.ErrorIs(t, err, ErrUnrepresentable)
	_, err = DocumentReferenceFromAttachment("A1", "", qubs.Attachment{}, "")
	require.ErrorIs(t, err, ErrUnrepresentable)
	_, err = DocumentReferenceFromAttachment("A1", "not/an id", a, "")
	require.Error(t, err)
	_, err = DocumentReferenceFromAttachment("A1", "", a, "https://x/ y")
	require.Error(t, err)
}

func TestContentTypeForFileName(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"referral.pdf": "application/pdf", "REFERRAL.PDF": "application/pdf", "a.b.pdf": "application/pdf",
		"sr.dcm": "application/dicom", "sr.DICOM": "application/dicom",
		"x.jpg": "image/jpeg", "x.JPEG": "image/jpeg", "x.png": "image/png", "x.tif": "image/tiff", "x.tiff": "image/tiff",
		"x.gif": "image/gif", "x.bmp": "image/bmp", "x.txt": "text/plain", "x.html": "text/html",
		"x.docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "x.doc": "application/msword",
		"x.rtf": "application/rtf",
		"":      "application/octet-stream", "pdf": "application/octet-stream", "x.pdf ": "application/octet-stream",
		"x.exe": "application/octet-stream", "dir.pdf/x": "application/octet-stream", `dir.pdf\x`: "application/octet-stream",
		"x.": "application/octet-stream",
	} {
		assert.Equal(t, want, ContentTypeForFileName(name), "%q", name)
	}
}

// Test payloads: the smallest files that pass the magic checks.
var (
	testPDF   = []byte("%PDF-1.4\n%test\n")
	testDICOM = append(make([]byte, 128), []byte("DICM\x02\x00\x00\x00")...)
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func sha1b64(b []byte) string {
	s := sha1.Sum(b)
	return b64(s[:])
}

// decodeDocument builds a DocumentReference from JSON, as the server
// would receive it.
func decodeDocument(t testing.TB, s string) *fhir.DocumentReference {
	t.Helper()
	var d fhir.DocumentReference
	require.NoError(t, json.Unmarshal([]byte(s), &d))
	return &d
}

func TestDocumentFromFHIR(t *testing.T) {
	t.Parallel()
	binID, err := BinaryID("A123456", exampleGUID)
	require.NoError(t, err)
	otherBin, err := BinaryID("A999", exampleGUID)
	require.NoError(t, err)
	doc := func(attachment string, extra ...string) string {
		s := `{"resourceType":"DocumentReference","status":"current",
			"subject":{"reference":"Patient/220000"},
			"context":{"related":[{"reference":"ServiceRequest/A123456"}]},
			"content":[{"attachment":` + attachment + `}]`
		for _, e := range extra {
			s += "," + e
		}
		return s + "}"
	}
	pdf := `{"contentType":"application/pdf","data":"` + b64(testPDF) + `","title":"Final report"}`

	t.Run("inline PDF", func(t *testing.T) {
		in, is := DocumentFromFHIR(decodeDocument(t, doc(pdf)))
		require.Empty(t, is)
		assert.Equal(t, "A123456", in.AppointmentID)
		assert.Equal(t, "220000", in.PatientID)
		assert.Equal(t, ArtifactInput{Index: 0, FileName: "Final report.pdf", ContentType: "application/pdf", Data: testPDF, Size: int64(len(testPDF))}, in.Artifact)
	})
	t.Run("Binary url", func(t *testing.T) {
		in, is := DocumentFromFHIR(decodeDocument(t, doc(`{"contentType":"application/dicom","url":"https://b.example/fhir/acme/Binary/`+binID+`","size":200,"hash":"`+sha1b64(testDICOM)+`"}`)))
		require.Empty(t, is)
		sum := sha1.Sum(testDICOM)
		assert.Equal(t, ArtifactInput{FileName: "report-1.dcm", ContentType: "application/dicom", BinaryID: binID,
			BinaryBase: "https://b.example/fhir/acme/", Size: 200, SHA1: sum[:]}, in.Artifact)
	})

	tests := []struct {
		name string
		body string
		want []Issue // Code, Status and Expression; Message is checked non-empty
	}{
		{"not current", strings.Replace(doc(pdf), `"current"`, `"superseded"`, 1),
			[]Issue{{Code: "value", Status: 422, Expression: "DocumentReference.status"}}},
		{"no context", `{"resourceType":"DocumentReference","status":"current","content":[{"attachment":` + pdf + `}]}`,
			[]Issue{{Code: "required", Status: 422, Expression: "DocumentReference.context.related"}}},
		{"no ServiceRequest in related", strings.Replace(doc(pdf), "ServiceRequest/A123456", "Encounter/1", 1),
			[]Issue{{Code: "required", Status: 422, Expression: "DocumentReference.context.related"}}},
		{"subject not a Patient", strings.Replace(doc(pdf), "Patient/220000", "Group/1", 1),
			[]Issue{{Code: "value", Status: 422, Expression: "DocumentReference.subject.reference"}}},
		{"two contents", strings.Replace(doc(pdf), `"content":[{`, `"content":[{"attachment":`+pdf+`},{`, 1),
			[]Issue{{Code: "not-supported", Status: 422, Expression: "DocumentReference.content[1]"}}},
		{"no content", `{"resourceType":"DocumentReference","status":"current","context":{"related":[{"reference":"ServiceRequest/A123456"}]}}`,
			[]Issue{{Code: "required", Status: 422, Expression: "DocumentReference.content"}}},
		{"image", doc(`{"contentType":"image/png","data":"iVBORw0KGgo="}`),
			[]Issue{{Code: "not-supported", Status: 422, Expression: "DocumentReference.content[0].attachment.contentType"}}},
		{"no content type", doc(`{"data":"` + b64(testPDF) + `"}`),
			[]Issue{{Code: "required", Status: 422, Expression: "DocumentReference.content[0].attachment.contentType"}}},
		{"over 2 MiB", doc(`{"contentType":"application/pdf","data":"` + b64(append(append([]byte{}, testPDF...), make([]byte, qubs.MaxUploadBytes)...)) + `"}`),
			[]Issue{{Code: "too-costly", Status: 413, Expression: "DocumentReference.content[0].attachment.data"}}},
		{"Binary of another appointment", doc(`{"contentType":"application/pdf","url":"Binary/` + otherBin + `"}`),
			[]Issue{{Code: "value", Status: 422, Expression: "DocumentReference.content[0].attachment.url"}}},
		{"url elsewhere", doc(`{"contentType":"application/pdf","url":"https://example.com/r.pdf"}`),
			[]Issue{{Code: "not-supported", Status: 422, Expression: "DocumentReference.content[0].attachment.url"}}},
		{"everything wrong at once", `{"resourceType":"DocumentReference","status":"entered-in-error","subject":{"reference":"#p"},
			"content":[{"attachment":{"contentType":"application/pdf"}}]}`,
			[]Issue{
				{Code: "value", Status: 422, Expression: "DocumentReference.status"},
				{Code: "required", Status: 422, Expression: "DocumentReference.context.related"},
				{Code: "value", Status: 422, Expression: "DocumentReference.subject.reference"},
				{Code: "required", Status: 422, Expression: "DocumentReference.content[0].attachment.data"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, is := DocumentFromFHIR(decodeDocument(t, tt.body))
			assert.Nil(t, in)
			assertIssues(t, tt.want, is)
		})
	}
	t.Run("nil", func(t *testing.T) {
		in, is := DocumentFromFHIR(nil)
		assert.Nil(t, in)
		assertIssues(t, []Issue{{Code: "structure", Status: 400, Expression: "DocumentReference"}}, is)
	})
}

// assertIssues compares issues by code, status and expression, in order,
// and checks every message is there and quotes nothing: none holds a
// quote, a digit run longer than the documented limits, or base64.
func assertIssues(t testing.TB, want, got []Issue) {
	t.Helper()
	strip := func(is []Issue) []Issue {
		out := make([]Issue, len(is))
		for i, x := range is {
			out[i] = Issue{Code: x.Code, Status: x.Status, Expression: x.Expression}
		}
		return out
	}
	assert.Equal(t, strip(want), strip(got))
	for _, is := range got {
		assert.NotEmpty(t, is.Message, "%s", is.Expression)
		assert.NotContains(t, is.Message, `"`, "messages quote nothing the client sent")
	}
}
