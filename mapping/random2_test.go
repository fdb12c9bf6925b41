package mapping

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// randomPick returns one of vs.
func randomPick[T any](r *rand.Rand, vs ...T) T { return vs[r.IntN(len(vs))] }

// randomText mixes realistic values with what FHIR cannot carry as is.
func randomText(r *rand.Rand) string {
	return randomPick(r, "", "Referral", "report", "Worksheet", "referral.pdf", "scan 1.TIFF", "Zoë O'Brien",
		"line\r\nbreak", "tab\there", "bell\a", "nul\x00", "latin1 caf\xe9", "Trần", "  spaced  ", "日本語.pdf", "x.dcm")
}

func randomTime(r *rand.Rand) *time.Time {
	switch r.IntN(5) {
	case 0:
		return nil
	case 1:
		t := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC) // year 0000: JSON allows it, FHIR does not
		return &t
	case 2:
		t := time.Date(2025, 1, 10, 2, 3, 4, r.IntN(1e9), time.FixedZone("", 10*3600))
		return &t
	}
	t := time.Date(2020+r.IntN(6), time.Month(1+r.IntN(12)), 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60), 0, time.UTC)
	return &t
}

func randomUser(r *rand.Rand) *qubs.UserSummary {
	if r.IntN(4) == 0 {
		return nil
	}
	return &qubs.UserSummary{Username: randomText(r), FirstName: randomText(r), Initials: randomText(r), LastName: randomText(r), Role: randomText(r)}
}

func randomRecordIDs(r *rand.Rand) (appt, guid string) {
	appt = randomPick(r, "A123456", "NS-000123.1", "APPT/7", "b32-x", "h-1", "Zoë")
	guid = randomPick(r, exampleGUID, "C4A1F2E3-0D9B-4C8A-B7E6-F5D4C3B2A190", "123", "1.2", "x y", "\x00")
	return appt, guid
}

// TestRandomDocumentsAndComments maps attachments and comments built from
// a seeded generator: every resource must be valid R4 and give back what
// QUBS sent.
func TestRandomDocumentsAndComments(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(2025, 2))
	n := 150
	if testing.Short() {
		n = 30
	}
	for i := range n {
		appt, guid := randomRecordIDs(rng)
		patient := randomPick(rng, "", "220000", "h-abc")
		a := qubs.Attachment{GUID: guid, Category: randomText(rng), FileName: randomText(rng), AddedDateTime: randomTime(rng),
			AddedBy: randomUser(rng), LastModifiedDateTime: randomTime(rng)}
		c := qubs.Comment{GUID: guid, CommentType: randomPick[qubs.CommentType](rng, "AC", "AA", "PC", "PA", "", "zz", "x\x01"),
			AppointmentID: randomPick(rng, "", appt, "A999"), PatientID: randomText(rng), CommentText: randomText(rng),
			CommentDateTime: randomTime(rng), IsAlert: rng.IntN(2) == 0, CommentBy: randomUser(rng), LastModifiedDateTime: randomTime(rng)}
		// Through JSON, as QUBS data arrives.
		roundTrip(t, &a)
		roundTrip(t, &c)

		d, err := DocumentReferenceFromAttachment(appt, patient, a, "")
		if errors.Is(err, ErrUnrepresentable) {
			continue
		}
		require.NoError(t, err)
		var gotD fhir.DocumentReference
		requireValidJSON(t, remarshal(t, d, &gotD))
		gotAppt, gotPatient, _, gotA := recoverAttachment(t, gotD)
		assert.Equal(t, appt, gotAppt)
		assert.Equal(t, patient, gotPatient)
		if a.AddedBy != nil && *a.AddedBy == (qubs.UserSummary{}) {
			a.AddedBy = nil
		}
		sameJSON(t, a, gotA, "attachment")

		m, err := CommunicationFromComment(appt, patient, c)
		require.NoError(t, err)
		var gotM fhir.Communication
		requireValidJSON(t, remarshal(t, m, &gotM))
		_, _, gotC := recoverComment(t, gotM)
		if c.CommentBy != nil && *c.CommentBy == (qubs.UserSummary{}) {
			c.CommentBy = nil
		}
		sameJSON(t, c, gotC, "comment")
		if IsAlert(c) {
			fl, err := FlagFromComment(appt, patient, c)
			require.NoError(t, err)
			var gotF fhir.Flag
			requireValidJSON(t, remarshal(t, fl, &gotF))
			checkFlag(t, gotF, gotM)
		}
		if t.Failed() {
			t.Fatalf("case %d: %+v / %+v", i, a, c)
		}
	}
}

// roundTrip passes v through JSON.
func roundTrip(t testing.TB, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, v))
}

// remarshal marshals v, decodes it into out and returns the JSON.
func remarshal(t testing.TB, v, out any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, out))
	return b
}
