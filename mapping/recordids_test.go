package mapping

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const exampleGUID = "989dd0c7-13bb-4bba-b7a0-53a28bdf5155"

func TestRecordID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, appt, guid, want string
		err                    error
	}{
		{"documented example", "A123456", exampleGUID, "A123456.989dd0c713bb4bbab7a053a28bdf5155", nil},
		{"uppercase UUID keeps its case", "A123456", strings.ToUpper(exampleGUID), "A123456.989DD0C713BB4BBAB7A053A28BDF5155", nil},
		{"mixed case UUID keeps its case", "A1", "989dd0c7-13BB-4bba-b7a0-53a28bdf5155", "A1.989dd0c713BB4bbab7a053a28bdf5155", nil},
		{"appointment id with dots", "NS-000123.1", exampleGUID, "NS-000123.1.989dd0c713bb4bbab7a053a28bdf5155", nil},
		{"appointment id that needs encoding", "A/1", exampleGUID, "b32-iextc.989dd0c713bb4bbab7a053a28bdf5155", nil},
		{"plain non-UUID guid", "A1", "123", "A1.123", nil},
		{"plain guid with dashes", "A1", "x-1-y", "A1.x-1-y", nil},
		{"guid with a dot is encoded", "A1", "1.2", "A1.b32-gexde", nil},
		// 32 hex digits would read as a UUID without dashes.
		{"guid of 32 hex digits is encoded", "A1", strings.Repeat("a", 32), "A1.b32-mfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqq", nil},
		{"encoded guid fills 64 characters", "A123456", strings.Repeat("a", 32), "A123456.b32-mfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqq", nil},
		{"encoded guid over 64 characters", "A1234567", strings.Repeat("a", 32), "", ErrUnrepresentable},
		{"guid with the encoded prefix is encoded", "A1", "b32-x", "A1.b32-miztelly", nil},
		{"31-character appointment id fits", strings.Repeat("A", 31), exampleGUID, strings.Repeat("A", 31) + ".989dd0c713bb4bbab7a053a28bdf5155", nil},
		{"32-character appointment id does not", strings.Repeat("A", 32), exampleGUID, "", ErrUnrepresentable},
		{"empty guid", "A1", "", "", ErrUnrepresentable},
		{"empty appointment id", "", exampleGUID, "", ErrUnrepresentable},
		{"guid not UTF-8", "A1", "\xff", "", ErrUnrepresentable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DocumentReferenceID(tt.appt, tt.guid)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				if tt.guid != "" {
					assert.NotContains(t, err.Error(), tt.guid, "guids stay out of error messages")
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Regexp(t, fhirID, got)
			appt, guid, err := ParseDocumentReferenceID(got)
			require.NoError(t, err)
			assert.Equal(t, tt.appt, appt)
			assert.Equal(t, tt.guid, guid)
			for name, f := range map[string]func(string, string) (string, error){
				"Binary": BinaryID, "Communication": CommunicationID, "Flag": FlagID,
			} {
				other, err := f(tt.appt, tt.guid)
				require.NoError(t, err)
				assert.Equal(t, got, other, "%s ids are the DocumentReference's", name)
			}
		})
	}
}

func TestParseRecordID(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, id string }{
		{"no dot", "A123456"},
		{"empty appointment part", ".989dd0c713bb4bbab7a053a28bdf5155"},
		{"empty guid part", "A1."},
		{"not a FHIR id", "A1/x.123"},
		{"derived id is no appointment", "h-abc.123"},
		{"non-canonical appointment encoding", "b32-ifrdcmrt.123"}, // "Ab123" is its own id
		{"guid part with the encoded prefix that decodes to a UUID", "A1.b32-" + b32.EncodeToString([]byte(exampleGUID))},
		{"guid part encoding a plain guid", "A1.b32-gezdg"}, // "123" stands as itself
		{"guid part not base32", "A1.b32-1"},
		{"guid part encoding invalid UTF-8", "A1.b32-74"},
		{"guid part with an underscore is not an id", "A1.a_b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, parse := range []func(string) (string, string, error){ParseDocumentReferenceID, ParseBinaryID, ParseCommunicationID, ParseFlagID} {
				_, _, err := parse(tt.id)
				require.ErrorIs(t, err, ErrInvalidID)
			}
		})
	}
}

// FuzzDocumentReferenceID checks that every (appointment, guid) pair the
// id functions accept is a FHIR id that parses back to the same pair, and
// that a refusal is ErrUnrepresentable.
func FuzzDocumentReferenceID(f *testing.F) {
	f.Add("A123456", exampleGUID)
	f.Add("A/1", "123")
	f.Add("NS-1.2", "1.2")
	f.Add("b32-x", "b32-y")
	f.Add("h-a", strings.ToUpper(exampleGUID))
	f.Add("", "")
	f.Fuzz(func(t *testing.T, appt, guid string) {
		id, err := DocumentReferenceID(appt, guid)
		if err != nil {
			if !errors.Is(err, ErrUnrepresentable) {
				t.Fatalf("DocumentReferenceID(%q, %q): error of the wrong kind: %v", appt, guid, err)
			}
			return
		}
		if !fhirID.MatchString(id) {
			t.Fatalf("DocumentReferenceID(%q, %q) = %q, not a FHIR id", appt, guid, id)
		}
		a, g, err := ParseDocumentReferenceID(id)
		if err != nil || a != appt || g != guid {
			t.Fatalf("ParseDocumentReferenceID(%q) = %q, %q, %v; want %q, %q", id, a, g, err, appt, guid)
		}
	})
}

// FuzzParseRecordID checks the other way: every id the parse functions
// accept is the one id of its pair.
func FuzzParseRecordID(f *testing.F) {
	for _, s := range []string{"A123456.989dd0c713bb4bbab7a053a28bdf5155", "b32-iextc.123", "A1.b32-gexda", "A1.b32-gezdg", "h-x.1", "A.", ".1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		appt, guid, err := ParseCommunicationID(id)
		if err != nil {
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("ParseCommunicationID(%q): error of the wrong kind: %v", id, err)
			}
			return
		}
		if back, err := CommunicationID(appt, guid); err != nil || back != id {
			t.Fatalf("CommunicationID(ParseCommunicationID(%q) = %q, %q) = %q, %v: two ids for one comment", id, appt, guid, back, err)
		}
	})
}
