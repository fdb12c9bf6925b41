package sqlutil

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

func TestAuditCursor(t *testing.T) {
	at := time.Date(2025, 1, 10, 3, 4, 5, 123456000, time.UTC)
	c := EncodeAuditCursor(at, "ae-1")
	got, id, err := DecodeAuditCursor(c)
	require.NoError(t, err)
	assert.True(t, at.Equal(got))
	assert.Equal(t, "ae-1", id)

	// Each search refuses the other's cursors.
	_, _, err = DecodeAuditCursor(EncodeCursor(at, "r1"))
	assert.ErrorIs(t, err, store.ErrInvalid)
	_, _, err = DecodeCursor(c)
	assert.ErrorIs(t, err, store.ErrInvalid)
}

func TestValidRelativeRef(t *testing.T) {
	for ref, want := range map[string]bool{
		"ServiceRequest/1":                   true,
		"DiagnosticReport/dr-1.a/_history/2": true,
		"Patient/":                           false,
		"serviceRequest/1":                   false,
		"Service_Request/1":                  false,
		"/1":                                 false,
		"ServiceRequest":                     false,
		"ServiceRequest/1/_history/":         false,
		"ServiceRequest/1/_history/a b":      false,
		"ServiceRequest/1/extra":             false,
		"https://example.org/fhir/Patient/1": false,
		"ServiceRequest/a b":                 false,
	} {
		assert.Equal(t, want, ValidRelativeRef(ref), ref)
	}
}

func TestPrepareAudit(t *testing.T) {
	recorded := time.Date(2025, 1, 10, 3, 4, 5, 123456789, time.FixedZone("AEDT", 11*3600))
	patients := []string{"Patient/2", "Patient/1", "Patient/2"}
	a := &store.AuditRecord{Domain: "acme", Action: "E", Interaction: "search-type", Outcome: "0",
		Recorded: recorded, PatientRefs: patients, EntityRefs: []string{}}
	require.NoError(t, PrepareAudit(a))
	assert.Len(t, a.ID, 32)
	assert.True(t, ValidFHIRID(a.ID))
	assert.Equal(t, time.Date(2025, 1, 9, 16, 4, 5, 123456000, time.UTC), a.Recorded, "UTC, microseconds")
	assert.Equal(t, []string{"Patient/2", "Patient/1"}, a.PatientRefs)
	assert.Equal(t, []string{"Patient/2", "Patient/1", "Patient/2"}, patients, "the caller's slice is left alone")
	assert.Nil(t, a.EntityRefs, "empty is nil, as read back")
}

func TestUniqueLong(t *testing.T) {
	var refs []string
	for i := range 40 {
		refs = append(refs, "Patient/"+strconv.Itoa(i))
	}
	assert.Equal(t, refs, unique(refs), "no repeat: the same list")
	withRepeats := append(slices.Clone(refs), "Patient/3", "Patient/40", "Patient/0", "Patient/40")
	before := slices.Clone(withRepeats)
	assert.Equal(t, append(slices.Clone(refs), "Patient/40"), unique(withRepeats))
	assert.Equal(t, before, withRepeats, "the caller's slice is left alone")
}

func TestRefsColumn(t *testing.T) {
	for _, refs := range [][]string{nil, {"Patient/1"}, {"ServiceRequest/1", `Odd/"quoted"`}} {
		s := EncodeRefs(refs)
		got, err := DecodeRefs(s)
		require.NoError(t, err)
		assert.Equal(t, refs, got)
	}
	assert.Equal(t, "[]", EncodeRefs([]string{}))
	// Byte for byte what json.Marshal wrote before, the column's earlier
	// rows included.
	odd := []string{"Patient/1", `a"b\c`, "<&>", "\u2028\u2029", "\x00\x1f\x7f", "\xff", strings.Repeat("é", 40)}
	want, err := json.Marshal(odd)
	require.NoError(t, err)
	assert.Equal(t, string(want), EncodeRefs(odd))
	_, err = DecodeRefs("not json")
	assert.Error(t, err)
}

func TestCheckJTI(t *testing.T) {
	assert.NoError(t, CheckJTI("c", "j", time.Now()))
	assert.ErrorIs(t, CheckJTI("", "j", time.Now()), store.ErrInvalid)
	assert.ErrorIs(t, CheckJTI("c", "", time.Now()), store.ErrInvalid)
	assert.ErrorIs(t, CheckJTI("c", "j", time.Time{}), store.ErrInvalid)
}

// TestPatientSet: a set is the same whatever the order and repeats of its
// references, one patient names the reference itself, and different
// patients never share a name.
func TestPatientSet(t *testing.T) {
	assert.Equal(t, "", PatientSet(nil))
	assert.Equal(t, "Patient/1", PatientSet([]string{"Patient/1"}))
	assert.Equal(t, "Patient/1", PatientSet([]string{"Patient/1", "Patient/1"}))
	assert.True(t, SingletonSet(PatientSet([]string{"Patient/1"})))

	ab := PatientSet([]string{"Patient/a", "Patient/b"})
	assert.Len(t, ab, 32)
	assert.False(t, SingletonSet(ab))
	assert.Equal(t, ab, PatientSet([]string{"Patient/b", "Patient/a", "Patient/b"}))
	assert.NotEqual(t, ab, PatientSet([]string{"Patient/a", "Patient/b", "Patient/c"}))
	// The separator keeps "ab"+"c" apart from "a"+"bc".
	assert.NotEqual(t, PatientSet([]string{"Patient/ab", "Patient/c"}), PatientSet([]string{"Patient/a", "Patient/bc"}))
}
