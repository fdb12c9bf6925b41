package qubssim_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

func post(t *testing.T, srv *qubssim.Server, tok, path string, body any, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	return call{method: http.MethodPost, path: path, tok: tok, body: body, hdr: hdr}.do(t, srv)
}

func TestCreateComment(t *testing.T) {
	srv, clk := startFake(t)
	tok := token(t, srv)
	a, _ := srv.Appointment("acme", "A123456")
	a.AppointmentID, a.PatientID = "NOPATIENT", ""
	srv.PutAppointment(a)

	tests := []struct {
		name    string
		appt    string
		body    string
		status  int
		typ     qubs.CommentType
		alert   bool
		patient bool // patient-level: empty appointmentId
	}{
		{"defaults to AC", "A123456", `{"commentText":"Report sent to referrer."}`, 201, "AC", false, false},
		{"isAlert false is AC", "A123456", `{"commentText":"x","isAlert":false}`, 201, "AC", false, false},
		{"isAlert true defaults to AA", "A123456", `{"commentText":"x","isAlert":true}`, 201, "AA", true, false},
		{"null type and alert", "A123456", `{"commentText":"x","commentType":null,"isAlert":null}`, 201, "AC", false, false},
		{"AA implies alert", "A123456", `{"commentText":"x","commentType":"AA"}`, 201, "AA", true, false},
		{"AA with isAlert true", "A123456", `{"commentText":"x","commentType":"AA","isAlert":true}`, 201, "AA", true, false},
		{"PC is patient-level", "A123456", `{"commentText":"x","commentType":"PC"}`, 201, "PC", false, true},
		{"PA is a patient alert", "A123456", `{"commentText":"x","commentType":"PA","isAlert":true}`, 201, "PA", true, true},
		{"unknown fields ignored", "A123456", `{"commentText":"x","mood":"happy"}`, 201, "AC", false, false},
		{"AA with isAlert false", "A123456", `{"commentText":"x","commentType":"AA","isAlert":false}`, 400, "", false, false},
		{"AC with isAlert true", "A123456", `{"commentText":"x","commentType":"AC","isAlert":true}`, 400, "", false, false},
		{"lower-case type", "A123456", `{"commentText":"x","commentType":"ac"}`, 400, "", false, false},
		{"empty type", "A123456", `{"commentText":"x","commentType":""}`, 400, "", false, false},
		{"unknown type", "A123456", `{"commentText":"x","commentType":"ZZ"}`, 400, "", false, false},
		{"missing text", "A123456", `{"commentType":"AC"}`, 400, "", false, false},
		{"null text", "A123456", `{"commentText":null}`, 400, "", false, false},
		{"empty text", "A123456", `{"commentText":""}`, 400, "", false, false},
		{"blank text", "A123456", `{"commentText":" \t\n "}`, 400, "", false, false},
		{"text is a number", "A123456", `{"commentText":5}`, 400, "", false, false},
		{"bad date", "A123456", `{"commentText":"x","commentDateTime":"yesterday"}`, 400, "", false, false},
		{"malformed JSON", "A123456", `{"commentText":`, 400, "", false, false},
		{"array body", "A123456", `[{"commentText":"x"}]`, 400, "", false, false},
		{"trailing garbage", "A123456", `{"commentText":"x"} {}`, 400, "", false, false},
		{"patient comment without patient", "NOPATIENT", `{"commentText":"x","commentType":"PC"}`, 400, "", false, false},
		{"appointment comment without patient", "NOPATIENT", `{"commentText":"x"}`, 201, "AC", false, false},
		{"unknown appointment", "NOPE", `{"commentText":"x"}`, 404, "", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(srv.CreatedComments("acme", tc.appt))
			resp, body := post(t, srv, tok, apiPath("acme", "/"+tc.appt+"/comments"), tc.body, nil)
			if tc.status != 201 {
				requireProblem(t, resp, body, tc.status)
				assert.Len(t, srv.CreatedComments("acme", tc.appt), before, "no effect")
				return
			}
			var c qubs.Comment
			requireJSON(t, resp, body, 201, &c)
			assert.NotEmpty(t, c.GUID)
			assert.Equal(t, tc.typ, c.CommentType)
			assert.Equal(t, tc.alert, c.IsAlert)
			if tc.patient {
				assert.Empty(t, c.AppointmentID)
				assert.Equal(t, "220000", c.PatientID)
			} else {
				assert.Equal(t, tc.appt, c.AppointmentID)
			}
			require.NotNil(t, c.CommentDateTime)
			assert.Equal(t, t0, *c.CommentDateTime)
			require.NotNil(t, c.CommentBy)
			assert.Equal(t, qubssim.DefaultClientID, c.CommentBy.Username)
			recs := srv.CreatedComments("acme", tc.appt)
			require.Len(t, recs, before+1)
			assert.Equal(t, c, recs[len(recs)-1].Comment)

			// Listed on the appointment; patient-level ones on the
			// patient's other appointment too.
			for _, appt := range []string{tc.appt, "A123463"} {
				resp, body := get(t, srv, tok, apiPath("acme", "/"+appt+"/comments/"+c.GUID))
				if appt == tc.appt || tc.patient {
					requireJSON(t, resp, body, 200, nil)
				} else {
					requireProblem(t, resp, body, 404)
				}
			}
		})
	}

	t.Run("given date and text kept as sent", func(t *testing.T) {
		clk.Advance(30 * time.Minute)
		resp, body := post(t, srv, tok, apiPath("acme", "/A123456/comments"),
			`{"commentText":"  Zoë's note  ","commentDateTime":"2025-01-10T13:03:04+11:00"}`, nil)
		var c qubs.Comment
		requireJSON(t, resp, body, 201, &c)
		assert.Equal(t, "  Zoë's note  ", c.CommentText)
		assert.Contains(t, string(body), `"commentDateTime":"2025-01-10T02:03:04Z"`)
		assert.Contains(t, string(body), `"lastModifiedDateTime":"2025-06-02T00:30:00Z"`)
	})
}

func TestSubmitReport(t *testing.T) {
	srv, clk := startFake(t)
	tok := token(t, srv)
	path := apiPath("acme", "/A123457/report")

	big := strings.Repeat("é", qubs.MaxReportTextBytes/2) // exactly the limit in UTF-8 bytes
	tests := []struct {
		name   string
		body   any
		status int
		stored string
	}{
		{"doc example", `{"reportText":"No acute abnormality detected.","reportStatus":"preliminary","reportedAtUtc":"2025-01-10T03:04:05Z"}`, 201, "preliminary"},
		{"status case-insensitive", `{"reportText":"x","reportStatus":"FINAL"}`, 201, "final"},
		{"mixed case", `{"reportText":"x","reportStatus":"Preliminary"}`, 201, "preliminary"},
		{"whitespace text kept", `{"reportText":" ","reportStatus":"final"}`, 201, "final"},
		{"all fields", `{"reportText":"x","reportStatus":"final","reportFormat":"text/html","interpretingClinicianName":"Dr Þór O'Brien",
			"interpretingClinicianProviderNumber":"1234567A","interpretingClinicianEmail":"dr@example.com","reportedAtUtc":"2025-01-10T14:04:05+11:00"}`, 201, "final"},
		{"exactly the size limit", map[string]string{"reportText": big, "reportStatus": "final"}, 201, "final"},
		{"one byte over", map[string]string{"reportText": big + "x", "reportStatus": "final"}, 400, ""},
		{"missing text", `{"reportStatus":"final"}`, 400, ""},
		{"empty text", `{"reportText":"","reportStatus":"final"}`, 400, ""},
		{"null text", `{"reportText":null,"reportStatus":"final"}`, 400, ""},
		{"missing status", `{"reportText":"x"}`, 400, ""},
		{"empty status", `{"reportText":"x","reportStatus":""}`, 400, ""},
		{"amended status", `{"reportText":"x","reportStatus":"amended"}`, 400, ""},
		{"padded status", `{"reportText":"x","reportStatus":" final"}`, 400, ""},
		{"text is an object", `{"reportText":{},"reportStatus":"final"}`, 400, ""},
		{"bad date", `{"reportText":"x","reportStatus":"final","reportedAtUtc":"2025-01-10"}`, 400, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk.Advance(time.Minute)
			before := len(srv.Reports("acme", "A123457"))
			resp, body := post(t, srv, tok, path, tc.body, nil)
			if tc.status != 201 {
				requireProblem(t, resp, body, tc.status)
				assert.Len(t, srv.Reports("acme", "A123457"), before)
				return
			}
			var rr qubs.ReportReceipt
			requireJSON(t, resp, body, 201, &rr)
			assert.Equal(t, tc.stored, rr.ReportStatus)
			recs := srv.Reports("acme", "A123457")
			require.Len(t, recs, before+1)
			last := recs[len(recs)-1]
			assert.Equal(t, rr.ReportGUID, last.ReportGUID)
			assert.Equal(t, tc.stored, last.Status)
			assert.Equal(t, clk.Now(), last.ReceivedAt)
			require.NotNil(t, rr.ReportedAtUTC)
			assert.Equal(t, last.ReportedAt, *rr.ReportedAtUTC)
			if last.Submission.ReportedAtUTC == nil {
				assert.Equal(t, clk.Now(), *rr.ReportedAtUTC, "defaults to the server time")
			} else {
				assert.True(t, last.Submission.ReportedAtUTC.Equal(*rr.ReportedAtUTC))
				assert.Contains(t, string(body), `Z"`, "reportedAtUtc is answered in UTC")
			}
			if last.Submission.ReportFormat == nil {
				assert.Equal(t, "text/plain", last.Format)
			}
		})
	}

	recs := srv.Reports("acme", "A123457")
	require.Greater(t, len(recs), 3)
	for _, r := range recs {
		assert.Equal(t, recs[0].ReportGUID, r.ReportGUID, "reportGuid is stable per appointment")
	}
	assert.Equal(t, "Dr Þór O'Brien", *recs[4].Submission.InterpretingClinicianName)
	assert.Equal(t, "FINAL", recs[1].Submission.ReportStatus, "the submission is kept as received")

	t.Run("other appointment other guid", func(t *testing.T) {
		resp, body := post(t, srv, tok, apiPath("acme", "/A123458/report"), `{"reportText":"x","reportStatus":"final"}`, nil)
		var rr qubs.ReportReceipt
		requireJSON(t, resp, body, 201, &rr)
		assert.NotEqual(t, recs[0].ReportGUID, rr.ReportGUID)
	})
	t.Run("not pending", func(t *testing.T) {
		srv.SetStatus("acme", "A123459", qubs.StatusAuthorised)
		resp, body := post(t, srv, tok, apiPath("acme", "/A123459/report"), `{"reportText":"x","reportStatus":"final"}`, nil)
		requireProblem(t, resp, body, 404)
	})
}

func TestPostCommonRules(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 20})
	tok := token(t, srv)
	routes := map[string]string{
		"comments": `{"commentText":"x"}`,
		"report":   `{"reportText":"x","reportStatus":"final"}`,
		"uploads":  `{"items":[{"fileName":"r.pdf"}]}`,
	}
	paths := map[string]string{"comments": "/comments", "report": "/report", "uploads": "/report/attachments"}
	for name, body := range routes {
		p := apiPath("acme", "/A123456"+paths[name])
		t.Run(name, func(t *testing.T) {
			tests := []struct {
				name   string
				ct     string
				tok    string
				key    []string
				status int
			}{
				{"ok", "application/json", tok, nil, 201},
				{"charset param", "application/json; charset=utf-8", tok, nil, 201},
				{"no token", "application/json", "", nil, 401},
				{"text/plain", "text/plain", tok, nil, 415},
				{"form", "application/x-www-form-urlencoded", tok, nil, 415},
				{"no content type", "", tok, nil, 415},
				// Keys differ per route: one key on another route is a 409.
				{"key ok", "application/json", tok, []string{name + "-abc-123_~!"}, 201},
				{"key 128", "application/json", tok, []string{strings.Repeat(name[:1], 128)}, 201},
				{"key 129", "application/json", tok, []string{strings.Repeat("k", 129)}, 400},
				{"key with space", "application/json", tok, []string{"a b"}, 400},
				{"key non-ascii", "application/json", tok, []string{"clé"}, 400},
				{"key empty", "application/json", tok, []string{""}, 400},
				{"two keys", "application/json", tok, []string{"a", "b"}, 400},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					req, err := http.NewRequest(http.MethodPost, srv.URL+p, strings.NewReader(body))
					require.NoError(t, err)
					if tc.ct != "" {
						req.Header.Set("Content-Type", tc.ct)
					}
					if tc.tok != "" {
						req.Header.Set("Authorization", "Bearer "+tc.tok)
					}
					for _, k := range tc.key {
						req.Header.Add("Idempotency-Key", k)
					}
					resp, rb := send(t, http.DefaultClient, req)
					if tc.status == 201 {
						requireJSON(t, resp, rb, 201, nil)
					} else {
						requireProblem(t, resp, rb, tc.status)
					}
				})
			}
		})
	}
	t.Run("body too large", func(t *testing.T) {
		huge := `{"reportText":"` + strings.Repeat("a", 17<<20) + `","reportStatus":"final"}`
		resp, body := post(t, srv, tok, apiPath("acme", "/A123456/report"), huge, nil)
		requireProblem(t, resp, body, 413)
	})
}

func TestUploadURLs(t *testing.T) {
	srv, _ := startFake(t)
	tok := token(t, srv)
	path := apiPath("acme", "/A123460/report/attachments")
	items := func(n int) string {
		its := make([]map[string]string, n)
		for i := range its {
			its[i] = map[string]string{"fileName": "r.pdf"}
		}
		b, _ := json.Marshal(map[string]any{"items": its})
		return string(b)
	}
	tests := []struct {
		name     string
		body     string
		status   int
		names    []string
		category string
	}{
		{"doc example", `{"items":[{"fileName":"report.pdf","contentType":"application/pdf"}]}`, 201, []string{"report.pdf"}, "report"},
		{"twenty", items(20), 201, nil, "report"},
		{"twenty-one", items(21), 400, nil, ""},
		{"none", `{"items":[]}`, 400, nil, ""},
		{"null items", `{"items":null}`, 400, nil, ""},
		{"no items", `{}`, 400, nil, ""},
		{"unix path", `{"items":[{"fileName":"/home/me/reports/final.pdf"}]}`, 201, []string{"final.pdf"}, "report"},
		{"windows path", `{"items":[{"fileName":"C:\\Users\\me\\final.dcm","contentType":"application/dicom"}]}`, 201, []string{"final.dcm"}, "report"},
		{"dot dot", `{"items":[{"fileName":"../../etc/passwd"}]}`, 201, []string{"passwd"}, "report"},
		{"category kept", `{"items":[{"fileName":"sr.dcm","category":"Structured Report"}]}`, 201, []string{"sr.dcm"}, "Structured Report"},
		{"null category and type", `{"items":[{"fileName":"a.pdf","category":null,"contentType":null}]}`, 201, []string{"a.pdf"}, "report"},
		{"255 chars", `{"items":[{"fileName":"` + strings.Repeat("é", 251) + `.pdf"}]}`, 201, []string{strings.Repeat("é", 251) + ".pdf"}, "report"},
		{"256 chars", `{"items":[{"fileName":"` + strings.Repeat("é", 252) + `.pdf"}]}`, 400, nil, ""},
		{"long path, short name", `{"items":[{"fileName":"` + strings.Repeat("d/", 300) + `ok.pdf"}]}`, 201, []string{"ok.pdf"}, "report"},
		{"missing name", `{"items":[{"contentType":"application/pdf"}]}`, 400, nil, ""},
		{"image type", `{"items":[{"fileName":"a.png","contentType":"image/png"}]}`, 400, nil, ""},
		{"upper-case type", `{"items":[{"fileName":"a.pdf","contentType":"APPLICATION/PDF"}]}`, 400, nil, ""},
		{"empty type", `{"items":[{"fileName":"a.pdf","contentType":""}]}`, 400, nil, ""},
		{"one bad item fails all", `{"items":[{"fileName":"a.pdf"},{"fileName":"b.pdf","contentType":"text/plain"}]}`, 400, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(srv.Uploads("acme", "A123460"))
			resp, body := post(t, srv, tok, path, tc.body, nil)
			if tc.status != 201 {
				requireProblem(t, resp, body, tc.status)
				assert.Len(t, srv.Uploads("acme", "A123460"), before)
				return
			}
			var u qubs.UploadURLs
			requireJSON(t, resp, body, 201, &u)
			recs := srv.Uploads("acme", "A123460")
			require.Len(t, recs, before+len(u.Items))
			for i, it := range u.Items {
				assert.NotEmpty(t, it.GUID)
				if tc.names != nil {
					assert.Equal(t, tc.names[i], it.FileName)
				}
				assert.Equal(t, tc.category, it.Category)
				assert.True(t, strings.HasPrefix(it.UploadURL, srv.URL+"/presigned/upload/"))
				require.NotNil(t, it.UploadURLExpiresAtUTC)
				assert.Equal(t, t0.Add(15*time.Minute), *it.UploadURLExpiresAtUTC)
				rec := recs[before+i]
				assert.Equal(t, it.GUID, rec.GUID)
				assert.False(t, rec.Uploaded)
			}
		})
	}

	t.Run("empty names get a fallback", func(t *testing.T) {
		resp, body := post(t, srv, tok, path, `{"items":[{"fileName":""},{"fileName":"dir/","contentType":"application/pdf"},{"fileName":"  ","contentType":"application/dicom"},{"fileName":".."}]}`, nil)
		var u qubs.UploadURLs
		requireJSON(t, resp, body, 201, &u)
		require.Len(t, u.Items, 4)
		assert.Regexp(t, `^report-[0-9a-f]{8}$`, u.Items[0].FileName)
		assert.Regexp(t, `^report-[0-9a-f]{8}\.pdf$`, u.Items[1].FileName)
		assert.Regexp(t, `^report-[0-9a-f]{8}\.dcm$`, u.Items[2].FileName)
		assert.Regexp(t, `^report-[0-9a-f]{8}$`, u.Items[3].FileName)
	})
}
