package qubssim_test

import (
	"encoding/base64"
	"encoding/xml"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

func TestGetAppointment(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 50})
	tok := token(t, srv)
	notPending := ""
	for _, id := range srv.AppointmentIDs("acme") {
		if a, _ := srv.Appointment("acme", id); a.Status == qubs.StatusCancelled {
			notPending = id
		}
	}
	require.NotEmpty(t, notPending)

	t.Run("pending", func(t *testing.T) {
		resp, body := get(t, srv, tok, apiPath("acme", "/A123456"))
		var a qubs.Appointment
		requireJSON(t, resp, body, 200, &a)
		want, _ := srv.Appointment("acme", "A123456")
		assert.Equal(t, want, a)
	})
	t.Run("escaped id", func(t *testing.T) {
		a, _ := srv.Appointment("acme", "A123456")
		a.AppointmentID = "weird/id ü"
		srv.PutAppointment(a)
		resp, body := get(t, srv, tok, apiPath("acme", "/weird%2Fid%20%C3%BC"))
		var got qubs.Appointment
		requireJSON(t, resp, body, 200, &got)
		assert.Equal(t, "weird/id ü", got.AppointmentID)
	})
	for _, tc := range []struct{ name, path string }{
		{"unknown", "/NOPE"},
		{"cancelled", "/" + notPending},
		{"attachments of cancelled", "/" + notPending + "/attachments"},
		{"comments of cancelled", "/" + notPending + "/comments"},
		{"attachment of unknown", "/NOPE/attachments/989dd0c7-13bb-4bba-b7a0-53a28bdf5155"},
		{"comment of unknown", "/NOPE/comments/ed6ef45a-4e3d-41b2-8049-7aec53bb9ab1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, srv, tok, apiPath("acme", tc.path))
			requireProblem(t, resp, body, 404)
		})
	}
	t.Run("leaves the worklist", func(t *testing.T) {
		require.True(t, srv.SetStatus("acme", "A123459", qubs.StatusDictated))
		resp, body := get(t, srv, tok, apiPath("acme", "/A123459"))
		requireProblem(t, resp, body, 404)
		assert.NotContains(t, srv.PendingIDs("acme"), "A123459")
		assert.False(t, srv.SetStatus("acme", "NOPE", qubs.StatusDictated))
	})
}

func TestAttachments(t *testing.T) {
	srv, clk := startFake(t)
	tok := token(t, srv)

	list := func(t *testing.T, query string) (*http.Response, []qubs.Attachment, []byte) {
		resp, body := get(t, srv, tok, apiPath("acme", "/A123456/attachments"+query))
		var atts []qubs.Attachment
		if resp.StatusCode == 200 {
			requireJSON(t, resp, body, 200, &atts)
		}
		return resp, atts, body
	}

	t.Run("ttl and disposition", func(t *testing.T) {
		tests := []struct {
			query  string
			status int
			ttl    time.Duration
			disp   string
		}{
			{"", 200, 900 * time.Second, "inline"},
			{"?urlTtlSeconds=120", 200, 120 * time.Second, "inline"},
			{"?urlTtlSeconds=5", 200, 60 * time.Second, "inline"},
			{"?urlTtlSeconds=-5", 200, 60 * time.Second, "inline"},
			{"?urlTtlSeconds=999999", 200, 3600 * time.Second, "inline"},
			{"?urlTtlSeconds=abc", 400, 0, ""},
			{"?urlTtlSeconds=1.5", 400, 0, ""},
			{"?urlTtlSeconds=", 400, 0, ""},
			{"?urlTtlSeconds=99999999999", 400, 0, ""},
			{"?disposition=attachment", 200, 900 * time.Second, "attachment"},
			{"?disposition=inline&urlTtlSeconds=3600", 200, 3600 * time.Second, "inline"},
			{"?disposition=download", 400, 0, ""},
			{"?disposition=INLINE", 400, 0, ""},
			{"?disposition=", 400, 0, ""},
		}
		for _, tc := range tests {
			t.Run(tc.query, func(t *testing.T) {
				resp, atts, body := list(t, tc.query)
				if tc.status != 200 {
					requireProblem(t, resp, body, tc.status)
					return
				}
				require.Len(t, atts, 1)
				a := atts[0]
				assert.Equal(t, "989dd0c7-13bb-4bba-b7a0-53a28bdf5155", a.GUID)
				assert.Equal(t, "Referral", a.Category)
				assert.Equal(t, "referral.pdf", a.FileName)
				require.NotNil(t, a.URL)
				require.NotNil(t, a.URLExpiresAtUTC)
				assert.Equal(t, t0.Add(tc.ttl), *a.URLExpiresAtUTC)
				assert.True(t, strings.HasPrefix(*a.URL, srv.URL+"/presigned/download/"))
				resp, pdf := get(t, srv, "", *a.URL)
				require.Equal(t, 200, resp.StatusCode)
				assert.Equal(t, "application/pdf", resp.Header.Get("Content-Type"))
				assert.Equal(t, strconv.Itoa(len(pdf)), resp.Header.Get("Content-Length"))
				assert.Equal(t, tc.disp+`; filename="referral.pdf"`, resp.Header.Get("Content-Disposition"))
				assert.True(t, strings.HasPrefix(string(pdf), "%PDF-"))
			})
		}
	})

	t.Run("get one", func(t *testing.T) {
		resp, body := get(t, srv, tok, apiPath("acme", "/A123456/attachments/989dd0c7-13bb-4bba-b7a0-53a28bdf5155?disposition=attachment"))
		var a qubs.Attachment
		requireJSON(t, resp, body, 200, &a)
		assert.Equal(t, "referral.pdf", a.FileName)
		require.NotNil(t, a.AddedBy)
		assert.Equal(t, "jchen", a.AddedBy.Username)
		assert.Equal(t, time.Date(2025, 1, 10, 1, 2, 3, 0, time.UTC), *a.AddedDateTime)
		require.NotNil(t, a.URL)

		resp, body = get(t, srv, tok, apiPath("acme", "/A123456/attachments/nope"))
		requireProblem(t, resp, body, 404)
		resp, body = get(t, srv, tok, apiPath("acme", "/A123456/attachments/989dd0c7-13bb-4bba-b7a0-53a28bdf5155?urlTtlSeconds=x"))
		requireProblem(t, resp, body, 400)
		// Another appointment's attachment is not found here.
		other := srv.PutAttachment("acme", "A123457", qubs.Attachment{Category: "Referral", FileName: "r.pdf"}, []byte("%PDF-1.4"))
		require.NotEmpty(t, other)
		resp, body = get(t, srv, tok, apiPath("acme", "/A123456/attachments/"+other))
		requireProblem(t, resp, body, 404)
	})

	t.Run("content type and names", func(t *testing.T) {
		for name, ct := range map[string]string{"scan.DCM": "application/dicom", "notes": "application/octet-stream", "Zoë's referral.pdf": "application/pdf"} {
			guid := srv.PutAttachment("acme", "A123458", qubs.Attachment{Category: "Other", FileName: name}, []byte("bytes of "+name))
			resp, body := get(t, srv, tok, apiPath("acme", "/A123458/attachments/"+guid+"?disposition=attachment"))
			var a qubs.Attachment
			requireJSON(t, resp, body, 200, &a)
			resp, got := get(t, srv, "", *a.URL)
			require.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, ct, resp.Header.Get("Content-Type"), name)
			assert.Equal(t, "bytes of "+name, string(got))
			if name == "Zoë's referral.pdf" {
				assert.Equal(t, `attachment; filename="Zo_'s referral.pdf"; filename*=UTF-8''Zo%C3%AB%27s%20referral.pdf`, resp.Header.Get("Content-Disposition"))
			}
		}
	})

	t.Run("expiry and tampering", func(t *testing.T) {
		_, atts, _ := list(t, "?urlTtlSeconds=60")
		u := *atts[0].URL
		clk.Advance(59 * time.Second)
		resp, _ := get(t, srv, "", u)
		assert.Equal(t, 200, resp.StatusCode)
		clk.Advance(time.Second)
		resp, body := get(t, srv, "", u)
		requireS3Error(t, resp, body, 403, "AccessDenied")

		_, atts, _ = list(t, "")
		u = *atts[0].URL
		i := strings.LastIndex(u, "/")
		raw, err := base64.RawURLEncoding.DecodeString(u[i+1:])
		require.NoError(t, err)
		raw[20] ^= 0x40
		resp, body = get(t, srv, "", u[:i+1]+base64.RawURLEncoding.EncodeToString(raw))
		requireS3Error(t, resp, body, 403, "SignatureDoesNotMatch")
		resp, body = get(t, srv, "", srv.URL+"/presigned/download/garbage")
		requireS3Error(t, resp, body, 403, "SignatureDoesNotMatch")
	})

	t.Run("range requests", func(t *testing.T) {
		_, atts, _ := list(t, "")
		resp, body := call{method: http.MethodGet, path: *atts[0].URL, hdr: map[string]string{"Range": "bytes=0-4"}}.do(t, srv)
		assert.Equal(t, http.StatusPartialContent, resp.StatusCode)
		assert.Equal(t, "%PDF-", string(body))
	})

	t.Run("no attachments is an empty array", func(t *testing.T) {
		resp, body := get(t, srv, tok, apiPath("acme", "/A123461/attachments"))
		requireJSON(t, resp, body, 200, nil)
		assert.Equal(t, "[]", string(body))
	})

	t.Run("public url", func(t *testing.T) {
		s := start(t, qubssim.Options{Appointments: 10, PublicURL: "https://qubs.example.test/base/"})
		resp, body := get(t, s, token(t, s), apiPath("acme", "/A123456/attachments"))
		var atts []qubs.Attachment
		requireJSON(t, resp, body, 200, &atts)
		assert.True(t, strings.HasPrefix(*atts[0].URL, "https://qubs.example.test/base/presigned/download/"), *atts[0].URL)
	})
}

func requireS3Error(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, string(body))
	assert.Equal(t, "application/xml", resp.Header.Get("Content-Type"))
	assert.NotEmpty(t, resp.Header.Get("X-Correlation-Id"))
	var e struct {
		Code      string `xml:"Code"`
		Message   string `xml:"Message"`
		RequestID string `xml:"RequestId"`
	}
	require.NoError(t, xml.Unmarshal(body, &e))
	assert.Equal(t, code, e.Code)
	assert.NotEmpty(t, e.Message)
	assert.NotEmpty(t, e.RequestID)
}

func TestComments(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 30})
	tok := token(t, srv)

	var cs []qubs.Comment
	resp, body := get(t, srv, tok, apiPath("acme", "/A123456/comments"))
	requireJSON(t, resp, body, 200, &cs)
	byGUID := map[string]qubs.Comment{}
	for _, c := range cs {
		byGUID[c.GUID] = c
	}
	doc := byGUID["ed6ef45a-4e3d-41b2-8049-7aec53bb9ab1"]
	assert.Equal(t, qubs.CommentAppointment, doc.CommentType)
	assert.Equal(t, "A123456", doc.AppointmentID)
	assert.Equal(t, "Patient requires wheelchair access.", doc.CommentText)
	require.NotNil(t, doc.CommentBy)
	assert.Equal(t, "mbrown", doc.CommentBy.Username)

	var patientAlert qubs.Comment
	for _, c := range cs {
		if c.CommentType == qubs.CommentPatientAlert {
			patientAlert = c
		}
	}
	require.NotEmpty(t, patientAlert.GUID, "Jane Doe's patient alert is listed on her appointment")
	assert.Empty(t, patientAlert.AppointmentID)
	assert.Equal(t, "220000", patientAlert.PatientID)
	assert.True(t, patientAlert.IsAlert)

	// The same patient comment on Jane's other appointment, but not her
	// appointment comment.
	resp, body = get(t, srv, tok, apiPath("acme", "/A123463/comments/"+patientAlert.GUID))
	var one qubs.Comment
	requireJSON(t, resp, body, 200, &one)
	assert.Equal(t, patientAlert, one)
	resp, body = get(t, srv, tok, apiPath("acme", "/A123463/comments/ed6ef45a-4e3d-41b2-8049-7aec53bb9ab1"))
	requireProblem(t, resp, body, 404)
	// Another patient's appointment does not see Jane's comments.
	resp, body = get(t, srv, tok, apiPath("acme", "/A123457/comments/"+patientAlert.GUID))
	requireProblem(t, resp, body, 404)
	resp, body = get(t, srv, tok, apiPath("acme", "/A123456/comments/nope"))
	requireProblem(t, resp, body, 404)
	// No comments is an empty array.
	resp, body = get(t, srv, tok, apiPath("acme", "/A123461/comments"))
	requireJSON(t, resp, body, 200, nil)
	assert.Equal(t, "[]", string(body))
}

func TestPutComment(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 20})
	tok := token(t, srv)
	pat := srv.PutComment("acme", qubs.Comment{CommentType: qubs.CommentPatient, PatientID: "220000", CommentText: "crafted"})
	appt := srv.PutComment("acme", qubs.Comment{GUID: "fixed-guid", CommentType: qubs.CommentAppointment, AppointmentID: "A123457", CommentText: "crafted"})
	require.NotEmpty(t, pat)
	assert.Equal(t, "fixed-guid", appt)
	assert.Empty(t, srv.PutComment("acme", qubs.Comment{AppointmentID: "NOPE"}))
	assert.Empty(t, srv.PutComment("acme", qubs.Comment{}))
	assert.Empty(t, srv.PutComment("nodomain", qubs.Comment{PatientID: "1"}))
	for _, path := range []string{"/A123456/comments/" + pat, "/A123463/comments/" + pat, "/A123457/comments/fixed-guid"} {
		resp, body := get(t, srv, tok, apiPath("acme", path))
		requireJSON(t, resp, body, 200, nil)
	}
	assert.Empty(t, srv.PutAttachment("acme", "NOPE", qubs.Attachment{}, nil))
}

// TestSeededAttachmentKinds downloads the seeded DICOM and extension-less
// attachments.
func TestSeededAttachmentKinds(t *testing.T) {
	srv := start(t, qubssim.Options{})
	tok := token(t, srv)
	found := map[string]bool{}
	for _, id := range srv.PendingIDs("acme") {
		if found["prior-study.dcm"] && found["scan-notes"] {
			break
		}
		resp, body := get(t, srv, tok, apiPath("acme", "/"+id+"/attachments"))
		var atts []qubs.Attachment
		requireJSON(t, resp, body, 200, &atts)
		for _, a := range atts {
			if a.FileName != "prior-study.dcm" && a.FileName != "scan-notes" || found[a.FileName] {
				continue
			}
			found[a.FileName] = true
			resp, b := get(t, srv, "", *a.URL)
			require.Equal(t, 200, resp.StatusCode)
			if a.FileName == "prior-study.dcm" {
				assert.Equal(t, "application/dicom", resp.Header.Get("Content-Type"))
				require.Greater(t, len(b), 132)
				assert.Equal(t, "DICM", string(b[128:132]))
			} else {
				assert.Equal(t, "application/octet-stream", resp.Header.Get("Content-Type"))
				assert.Contains(t, string(b), "QUBS simulator | Other")
			}
		}
	}
	assert.True(t, found["prior-study.dcm"])
	assert.True(t, found["scan-notes"])
}
