package mapping

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// commentCase is one golden input of CommunicationFromComment and
// FlagFromComment.
type commentCase struct {
	AppointmentID string       `json:"appointmentId"`
	PatientID     string       `json:"patientId"`
	Comment       qubs.Comment `json:"comment"`
}

// commentResources is the golden output: the Communication, and the Flag
// for alerts.
type commentResources struct {
	Communication *Communication `json:"Communication"`
	Flag          *fhir.Flag     `json:"Flag,omitempty"`
}

// TestGoldenComments maps each testdata/comments/<case>.qubs.json and
// compares the resources with <case>.fhir.json; they must be valid R4 and
// the comment must come back from the Communication alone.
func TestGoldenComments(t *testing.T) {
	t.Parallel()
	runGolden(t, "comments", ".qubs.json", 6, func(t *testing.T, in []byte) any {
		var c commentCase
		require.NoError(t, json.Unmarshal(in, &c))
		var r commentResources
		var err error
		r.Communication, err = CommunicationFromComment(c.AppointmentID, c.PatientID, c.Comment)
		require.NoError(t, err)
		r.Flag, err = FlagFromComment(c.AppointmentID, c.PatientID, c.Comment)
		if !IsAlert(c.Comment) {
			require.ErrorIs(t, err, ErrNotAlert)
		} else {
			require.NoError(t, err)
		}
		return r
	}, func(t *testing.T, in, golden []byte) {
		var c commentCase
		require.NoError(t, json.Unmarshal(in, &c))
		var raw struct {
			Communication json.RawMessage
			Flag          json.RawMessage
		}
		require.NoError(t, json.Unmarshal(golden, &raw))
		requireValidJSON(t, raw.Communication)
		var comm fhir.Communication
		require.NoError(t, json.Unmarshal(raw.Communication, &comm))
		appt, patient, got := recoverComment(t, comm)
		assert.Equal(t, c.AppointmentID, appt)
		assert.Equal(t, c.PatientID, patient)
		want := c.Comment
		if want.CommentBy != nil && *want.CommentBy == (qubs.UserSummary{}) {
			want.CommentBy = nil // {} carries nothing: documented
		}
		sameJSON(t, want, got, "the comment read back from FHIR")

		require.Equal(t, IsAlert(c.Comment), raw.Flag != nil, "a Flag exactly for alerts")
		if raw.Flag != nil {
			requireValidJSON(t, raw.Flag)
			var fl fhir.Flag
			require.NoError(t, json.Unmarshal(raw.Flag, &fl))
			checkFlag(t, fl, comm)
		}
	})
}

// recoverComment is the test-only inverse of CommunicationFromComment.
func recoverComment(t testing.TB, m fhir.Communication) (appt, patientID string, c qubs.Comment) {
	t.Helper()
	orig := originals(t, m.Extension)
	require.NotNil(t, m.Id)
	appt, guid, err := ParseCommunicationID(*m.Id)
	require.NoError(t, err)
	assert.Equal(t, fhir.EventStatusCompleted, m.Status)
	require.Len(t, m.Identifier, 1)
	assert.Equal(t, SystemCommentGUID, val(m.Identifier[0].System))
	c.GUID = restored(t, orig, "guid", m.Identifier[0].Value)
	assert.Equal(t, guid, c.GUID, "the id holds the guid")
	srID, err := ServiceRequestID(appt)
	require.NoError(t, err)
	assert.Equal(t, []fhir.Reference{serviceRequestRef(srID)}, m.BasedOn)

	if len(m.Category) > 0 {
		require.Len(t, m.Category, 1)
		cc := m.Category[0]
		if len(cc.Coding) > 0 {
			require.Len(t, cc.Coding, 1)
			assert.Equal(t, SystemCommentType, val(cc.Coding[0].System))
			c.CommentType = qubs.CommentType(val(cc.Coding[0].Code))
			assert.True(t, c.CommentType.Valid())
			assert.Equal(t, commentTypeDisplay[c.CommentType], val(cc.Coding[0].Display))
		} else {
			c.CommentType = qubs.CommentType(restored(t, orig, "commentType", cc.Text))
			assert.False(t, c.CommentType.Valid(), "a documented type gets a coding")
		}
	}
	if m.Subject != nil {
		if p, ok := strings.CutPrefix(val(m.Subject.Reference), "Patient/"); ok {
			patientID = p
		} else {
			require.Nil(t, m.Subject.Reference)
		}
		if m.Subject.Identifier != nil {
			assert.Equal(t, SystemPatientID, val(m.Subject.Identifier.System))
			c.PatientID = restored(t, orig, "patientId", m.Subject.Identifier.Value)
		}
	}
	c.CommentDateTime = restoredTime(t, orig, "commentDateTime", m.Sent)
	c.CommentBy = recoverUser(t, orig, "commentBy", m.Sender)
	if m.Meta != nil {
		c.LastModifiedDateTime = restoredTime(t, orig, "lastModifiedDateTime", m.Meta.LastUpdated)
	} else {
		c.LastModifiedDateTime = restoredTime(t, orig, "lastModifiedDateTime", nil)
	}
	if len(m.Payload) > 0 {
		require.Len(t, m.Payload, 1)
		c.CommentText = restored(t, orig, "commentText", &m.Payload[0].ContentString)
	}
	ext := extensions(m.Extension)
	require.Len(t, ext[ExtIsAlert], 1)
	c.IsAlert = *ext[ExtIsAlert][0].ValueBoolean
	c.AppointmentID = appt
	if len(ext[ExtPatientLevel]) > 0 {
		assert.True(t, *ext[ExtPatientLevel][0].ValueBoolean)
		c.AppointmentID = ""
	}
	if v, ok := extString(t, ext, ExtCommentAppointmentID); ok {
		require.Empty(t, ext[ExtPatientLevel])
		c.AppointmentID = restored(t, orig, "appointmentId", &v)
	}
	assert.Empty(t, orig, "ExtOriginal of fields the inverse did not read")
	return appt, patientID, c
}

// checkFlag checks a Flag against the Communication of the same comment.
func checkFlag(t testing.TB, fl fhir.Flag, m fhir.Communication) {
	t.Helper()
	assert.Equal(t, val(m.Id), val(fl.Id), "Flag and Communication share the id")
	assert.Equal(t, m.Identifier, fl.Identifier)
	assert.Equal(t, fhir.FlagStatusActive, fl.Status)
	assert.Equal(t, m.Category, fl.Category)
	assert.Equal(t, m.Sender, fl.Author)
	assert.Equal(t, m.Meta, fl.Meta)
	if len(m.Payload) > 0 {
		assert.Equal(t, m.Payload[0].ContentString, val(fl.Code.Text))
		assert.Empty(t, fl.Code.Extension)
	} else {
		assert.Equal(t, "Alert", val(fl.Code.Text))
		assert.Equal(t, []fhir.Extension{{Url: ExtDerivedText, ValueBoolean: ptr(true)}}, fl.Code.Extension)
	}
	if m.Subject != nil {
		assert.Equal(t, *m.Subject, fl.Subject)
	} else {
		assert.Equal(t, ExtDataAbsentReason, fl.Subject.Extension[0].Url)
	}
	if m.Sent != nil {
		require.NotNil(t, fl.Period)
		assert.Equal(t, m.Sent, fl.Period.Start)
	} else {
		assert.Nil(t, fl.Period)
	}
	ext := extensions(fl.Extension)
	require.Len(t, ext[ExtFlagServiceRequest], 1)
	assert.Equal(t, &m.BasedOn[0], ext[ExtFlagServiceRequest][0].ValueReference)
	require.Len(t, ext[ExtFlagDetail], 1)
	assert.Equal(t, "Communication/"+val(m.Id), val(ext[ExtFlagDetail][0].ValueReference.Reference))
	// The Flag keeps the originals of what it shows; the Communication
	// has them all.
	mo := originals(t, m.Extension)
	for field, v := range originals(t, fl.Extension) {
		assert.Equal(t, mo[field], v, "field %s", field)
	}
}

func TestCommunicationMarshal(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		p    fhir.CommunicationPayload
		want string
	}{
		"string":     {fhir.CommunicationPayload{ContentString: "hi"}, `[{"contentString":"hi"}]`},
		"attachment": {fhir.CommunicationPayload{ContentAttachment: fhir.Attachment{ContentType: ptr("text/plain"), Data: ptr("aGk=")}}, `[{"contentAttachment":{"contentType":"text/plain","data":"aGk="}}]`},
		"reference":  {fhir.CommunicationPayload{Id: ptr("p1"), ContentReference: fhir.Reference{Reference: ptr("DocumentReference/x")}}, `[{"id":"p1","contentReference":{"reference":"DocumentReference/x"}}]`},
	} {
		t.Run(name, func(t *testing.T) {
			c := Communication{fhir.Communication{Status: fhir.EventStatusCompleted, Payload: []fhir.CommunicationPayload{tc.p}}}
			b, err := json.Marshal(c)
			require.NoError(t, err)
			var got struct {
				ResourceType string          `json:"resourceType"`
				Payload      json.RawMessage `json:"payload"`
			}
			require.NoError(t, json.Unmarshal(b, &got))
			assert.Equal(t, "Communication", got.ResourceType)
			assert.JSONEq(t, tc.want, string(got.Payload))
			requireValidJSON(t, b)
			// And back through the samply model.
			var back Communication
			require.NoError(t, json.Unmarshal(b, &back))
			assert.Equal(t, c, back)
		})
	}
	b, err := json.Marshal(Communication{fhir.Communication{Status: fhir.EventStatusCompleted}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"resourceType":"Communication","status":"completed"}`, string(b))
}

func TestCommentMappingErrors(t *testing.T) {
	t.Parallel()
	c := qubs.Comment{GUID: exampleGUID, CommentType: qubs.CommentAppointmentAlert, IsAlert: true}
	_, err := CommunicationFromComment(strings.Repeat("A", 40), "", c)
	require.ErrorIs(t, err, ErrUnrepresentable)
	_, err = FlagFromComment(strings.Repeat("A", 40), "", c)
	require.ErrorIs(t, err, ErrUnrepresentable)
	_, err = CommunicationFromComment("A1", "bad id", c)
	require.Error(t, err)
	_, err = FlagFromComment("A1", "", qubs.Comment{GUID: exampleGUID, CommentType: qubs.CommentAppointment})
	require.ErrorIs(t, err, ErrNotAlert)
	for typ, alert := range map[qubs.CommentType]bool{"AC": false, "PC": false, "AA": true, "PA": true, "": false, "X": false} {
		assert.Equal(t, alert, IsAlert(qubs.Comment{CommentType: typ}), "%q", typ)
		assert.True(t, IsAlert(qubs.Comment{CommentType: typ, IsAlert: true}), "%q with isAlert", typ)
	}
}

func decodeCommunication(t testing.TB, s string) *fhir.Communication {
	t.Helper()
	var c fhir.Communication
	require.NoError(t, json.Unmarshal([]byte(s), &c))
	return &c
}

func TestCommentFromFHIR(t *testing.T) {
	t.Parallel()
	comm := func(extra ...string) string {
		s := `{"resourceType":"Communication","status":"completed",
			"basedOn":[{"reference":"ServiceRequest/A123456"}],
			"payload":[{"contentString":"Report sent to referrer."}]`
		for _, e := range extra {
			s += "," + e
		}
		return s + "}"
	}
	cat := func(code string) string {
		return `"category":[{"coding":[{"system":"` + SystemCommentType + `","code":"` + code + `"}]}]`
	}
	alertExt := func(b string) string {
		return `"extension":[{"url":"` + ExtIsAlert + `","valueBoolean":` + b + `}]`
	}
	when := time.Date(2025, 1, 10, 2, 3, 4, 0, time.UTC)
	typ := func(t qubs.CommentType) *qubs.CommentType { return &t }

	ok := []struct {
		name string
		body string
		want CommentInput
	}{
		{"plain comment: QUBS defaults", comm(), CommentInput{AppointmentID: "A123456", Comment: qubs.NewComment{CommentText: "Report sent to referrer."}}},
		{"appointment alert", comm(cat("AA")), CommentInput{AppointmentID: "A123456",
			Comment: qubs.NewComment{CommentText: "Report sent to referrer.", CommentType: typ("AA"), IsAlert: ptr(true)}}},
		{"patient comment", comm(cat("PC")), CommentInput{AppointmentID: "A123456",
			Comment: qubs.NewComment{CommentText: "Report sent to referrer.", CommentType: typ("PC"), IsAlert: ptr(false)}}},
		{"patient alert with agreeing extension", comm(cat("PA"), alertExt("true")), CommentInput{AppointmentID: "A123456",
			Comment: qubs.NewComment{CommentText: "Report sent to referrer.", CommentType: typ("PA"), IsAlert: ptr(true)}}},
		{"extension alone makes an appointment alert", comm(alertExt("true")), CommentInput{AppointmentID: "A123456",
			Comment: qubs.NewComment{CommentText: "Report sent to referrer.", CommentType: typ("AA"), IsAlert: ptr(true)}}},
		{"extension false alone", comm(alertExt("false")), CommentInput{AppointmentID: "A123456",
			Comment: qubs.NewComment{CommentText: "Report sent to referrer.", CommentType: typ("AC"), IsAlert: ptr(false)}}},
		{"other category systems ignored", comm(`"category":[{"coding":[{"system":"http://example.org","code":"x"}],"text":"t"}]`),
			CommentInput{AppointmentID: "A123456", Comment: qubs.NewComment{CommentText: "Report sent to referrer."}}},
		{"priority does not make an alert", comm(`"priority":"stat"`),
			CommentInput{AppointmentID: "A123456", Comment: qubs.NewComment{CommentText: "Report sent to referrer."}}},
		{"sent in another zone, subject, absolute basedOn", strings.Replace(comm(`"sent":"2025-01-10T12:03:04+10:00"`, `"subject":{"reference":"Patient/220000"}`),
			`"ServiceRequest/A123456"`, `"https://bridge.example/fhir/acme/ServiceRequest/A123456/_history/3"`, 1),
			CommentInput{AppointmentID: "A123456", PatientID: "220000", Comment: qubs.NewComment{CommentText: "Report sent to referrer.", CommentDateTime: &when}}},
		{"encoded appointment id", strings.Replace(comm(), "A123456", "b32-iextc", 1),
			CommentInput{AppointmentID: "A/1", Comment: qubs.NewComment{CommentText: "Report sent to referrer."}}},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			in, is := CommentFromFHIR(decodeCommunication(t, tt.body))
			require.Empty(t, is)
			sameJSON(t, tt.want, *in, "comment input")
			if tt.want.Comment.CommentDateTime != nil {
				assert.Equal(t, time.UTC, in.Comment.CommentDateTime.Location())
			}
		})
	}

	bad := []struct {
		name string
		body string
		want []Issue
	}{
		{"not completed", strings.Replace(comm(), "completed", "in-progress", 1),
			[]Issue{{Code: "value", Status: 422, Expression: "Communication.status"}}},
		{"no basedOn", `{"resourceType":"Communication","status":"completed","payload":[{"contentString":"x"}]}`,
			[]Issue{{Code: "required", Status: 422, Expression: "Communication.basedOn"}}},
		{"non-canonical ServiceRequest id", strings.Replace(comm(), "A123456", "b32-ifrdcmrt", 1),
			[]Issue{{Code: "value", Status: 422, Expression: "Communication.basedOn[0].reference"}}},
		{"derived id is not a ServiceRequest", strings.Replace(comm(), "A123456", "h-abc", 1),
			[]Issue{{Code: "value", Status: 422, Expression: "Communication.basedOn[0].reference"}}},
		{"two ServiceRequests", strings.Replace(comm(), `[{"reference":"ServiceRequest/A123456"}]`, `[{"reference":"ServiceRequest/A1"},{"reference":"ServiceRequest/A2"}]`, 1),
			[]Issue{{Code: "not-supported", Status: 422, Expression: "Communication.basedOn"}}},
		{"contained ServiceRequest", strings.Replace(comm(), `{"reference":"ServiceRequest/A123456"}`, `{"reference":"#sr","type":"ServiceRequest"}`, 1),
			[]Issue{
				{Code: "value", Status: 422, Expression: "Communication.basedOn[0].reference"},
			}},
		{"no payload", `{"resourceType":"Communication","status":"completed","basedOn":[{"reference":"ServiceRequest/A1"}]}`,
			[]Issue{{Code: "required", Status: 422, Expression: "Communication.payload"}}},
		{"blank text", strings.Replace(comm(), "Report sent to referrer.", " \\n\\t", 1),
			[]Issue{{Code: "value", Status: 422, Expression: "Communication.payload[0].contentString"}}},
		{"attachment payload", strings.Replace(comm(), `{"contentString":"Report sent to referrer."}`, `{"contentAttachment":{"contentType":"text/plain","data":"eA=="}}`, 1),
			[]Issue{{Code: "not-supported", Status: 422, Expression: "Communication.payload[0]"}}},
		{"two payloads", strings.Replace(comm(), `[{"contentString":"Report sent to referrer."}]`, `[{"contentString":"a"},{"contentString":"b"}]`, 1),
			[]Issue{{Code: "not-supported", Status: 422, Expression: "Communication.payload[1]"}}},
		{"unknown comment type", comm(cat("XX")),
			[]Issue{{Code: "code-invalid", Status: 422, Expression: "Communication.category[0].coding[0].code"}}},
		{"two comment types", comm(`"category":[{"coding":[{"system":"` + SystemCommentType + `","code":"AC"}]},{"coding":[{"system":"` + SystemCommentType + `","code":"PA"}]}]`),
			[]Issue{{Code: "value", Status: 422, Expression: "Communication.category[1].coding[0].code"}}},
		{"extension contradicts the type", comm(cat("AC"), alertExt("true")),
			[]Issue{{Code: "value", Status: 422, Expression: "Communication.extension"}}},
		{"sent without a time", comm(`"sent":"2025-01-10"`),
			[]Issue{{Code: "value", Status: 422, Expression: "Communication.sent"}}},
		{"subject not a patient", comm(`"subject":{"reference":"Group/1"}`),
			[]Issue{{Code: "value", Status: 422, Expression: "Communication.subject.reference"}}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			in, is := CommentFromFHIR(decodeCommunication(t, tt.body))
			assert.Nil(t, in)
			assertIssues(t, tt.want, is)
		})
	}
	t.Run("nil", func(t *testing.T) {
		in, is := CommentFromFHIR(nil)
		assert.Nil(t, in)
		assertIssues(t, []Issue{{Code: "structure", Status: 400, Expression: "Communication"}}, is)
	})
}

// TestCommentRoundTrip posts back what the bridge serves: a Communication
// made from a comment reads as the same comment request.
func TestCommentRoundTrip(t *testing.T) {
	t.Parallel()
	when := time.Date(2025, 1, 10, 2, 3, 4, 0, time.UTC)
	for _, typ := range []qubs.CommentType{"AC", "AA", "PC", "PA"} {
		c := qubs.Comment{GUID: exampleGUID, CommentType: typ, AppointmentID: "A1", PatientID: "P1", CommentText: "text",
			CommentDateTime: &when, IsAlert: typ == "AA" || typ == "PA"}
		m, err := CommunicationFromComment("A1", "P1", c)
		require.NoError(t, err)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		in, is := CommentFromFHIR(decodeCommunication(t, string(b)))
		require.Empty(t, is, "%s", typ)
		sameJSON(t, CommentInput{AppointmentID: "A1", PatientID: "P1", Comment: qubs.NewComment{
			CommentText: "text", CommentType: &typ, IsAlert: ptr(c.IsAlert), CommentDateTime: &when,
		}}, *in, string(typ))
	}
}
