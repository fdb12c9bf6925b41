package mapping

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// fhirID is the R4 id type, written out independently of validID.
var fhirID = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

func TestEncodeID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
		err            error
	}{
		{"plain id passes through", "A123456", "A123456", nil},
		{"digits", "8800123", "8800123", nil},
		{"dash and dot pass through", "NS-000123.1", "NS-000123.1", nil},
		{"64 valid characters pass through", strings.Repeat("x", 64), strings.Repeat("x", 64), nil},
		{"slash is encoded", "A/1", "b32-iextc", nil},
		{"space is encoded", "A 1", "b32-ieqdc", nil},
		{"non-ASCII is encoded", "Zoë", "b32-ljx4hky", nil},
		{"the encoded prefix is always encoded", "b32-abc", "b32-miztellbmjrq", nil},
		{"the derived prefix is always encoded", "h-abc", "b32-nawwcytd", nil},
		{"other case of the prefix passes", "B32-abc", "B32-abc", nil},
		{"37 bytes encode to 64 characters", strings.Repeat("/", 37), "", nil},
		{"38 bytes needing encoding are too long", strings.Repeat("/", 38), "", ErrUnrepresentable},
		{"65 valid characters are too long", strings.Repeat("x", 65), "", ErrUnrepresentable},
		{"empty", "", "", ErrUnrepresentable},
		{"invalid UTF-8", "A\xff", "", ErrUnrepresentable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EncodeID(tt.in)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				if tt.in != "" {
					assert.NotContains(t, err.Error(), tt.in, "ids stay out of error messages")
				}
				return
			}
			require.NoError(t, err)
			if tt.want != "" {
				assert.Equal(t, tt.want, got)
			}
			assert.Regexp(t, fhirID, got)
			back, err := DecodeID(got)
			require.NoError(t, err)
			assert.Equal(t, tt.in, back)
		})
	}
}

func TestDecodeID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
		err            bool
	}{
		{"plain", "A123456", "A123456", false},
		{"encoded", "b32-iextc", "A/1", false},
		{"derived ids decode to themselves", "h-abc", "h-abc", false},
		{"empty", "", "", true},
		{"too long", strings.Repeat("x", 65), "", true},
		{"not an id", "A/1", "", true},
		{"prefix alone", "b32-", "", true},
		{"not base32", "b32-1", "", true},
		{"uppercase base32 is not ours", "b32-IEXTC", "", true},
		{"padding is not ours", "b32-iextc===", "", true},
		{"non-zero trailing bits", "b32-iextd", "", true},
		{"encoding of an id that passes through", "b32-ifrdcmrt", "", true}, // "Ab123" would be itself
		{"encoding of invalid UTF-8", "b32-74", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeID(tt.in)
			if tt.err {
				require.ErrorIs(t, err, ErrInvalidID)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// FuzzDecodeID checks the id functions both ways: every string EncodeID
// accepts comes back from DecodeID unchanged, and every id DecodeID
// accepts is a FHIR id that EncodeID reproduces (derived ids aside, which
// decode to themselves and are never produced by EncodeID).
func FuzzDecodeID(f *testing.F) {
	for _, s := range []string{"A123456", "b32-iextc", "h-abc", "b32-", "APPT/2025 #7 Zoë", strings.Repeat("/", 37), "b32-ifrdcmrt", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if enc, err := EncodeID(s); err == nil {
			if !fhirID.MatchString(enc) {
				t.Fatalf("EncodeID(%q) = %q, not a FHIR id", s, enc)
			}
			back, err := DecodeID(enc)
			if err != nil || back != s {
				t.Fatalf("DecodeID(EncodeID(%q)=%q) = %q, %v", s, enc, back, err)
			}
		} else if !errors.Is(err, ErrUnrepresentable) {
			t.Fatalf("EncodeID(%q): error of the wrong kind: %v", s, err)
		}
		dec, err := DecodeID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("DecodeID(%q): error of the wrong kind: %v", s, err)
			}
			return
		}
		if !fhirID.MatchString(s) {
			t.Fatalf("DecodeID accepted %q, not a FHIR id", s)
		}
		if strings.HasPrefix(s, DerivedPrefix) {
			if dec != s {
				t.Fatalf("DecodeID(%q) = %q, want the derived id itself", s, dec)
			}
			return
		}
		if enc, err := EncodeID(dec); err != nil || enc != s {
			t.Fatalf("EncodeID(DecodeID(%q)=%q) = %q, %v: two ids for one QUBS id", s, dec, enc, err)
		}
	})
}

func TestResourceIDs(t *testing.T) {
	t.Parallel()
	base := qubs.Appointment{
		AppointmentID: "A1", PatientID: "220000", DoctorName: "Dr Smith", ClinicName: "Example Clinic",
		RadiologistUser: &qubs.UserSummary{Username: "rsmith", FirstName: "Rory"},
	}
	with := func(f func(*qubs.Appointment)) *qubs.Appointment {
		a := base
		u := *base.RadiologistUser
		a.RadiologistUser = &u
		f(&a)
		return &a
	}
	derived := regexp.MustCompile(`^h-[a-z2-7]{32}$`)

	t.Run("patient id is the QUBS id", func(t *testing.T) {
		assert.Equal(t, "220000", PatientID(&base))
	})
	t.Run("patient without id is derived per appointment", func(t *testing.T) {
		a1 := with(func(a *qubs.Appointment) { a.PatientID = "" })
		a2 := with(func(a *qubs.Appointment) { a.PatientID = ""; a.AppointmentID = "A2" })
		assert.Regexp(t, derived, PatientID(a1))
		assert.Equal(t, PatientID(a1), PatientID(with(func(a *qubs.Appointment) { a.PatientID = "" })), "deterministic")
		assert.NotEqual(t, PatientID(a1), PatientID(a2))
	})
	t.Run("patient id too long to encode is derived", func(t *testing.T) {
		a := with(func(a *qubs.Appointment) { a.PatientID = strings.Repeat("é", 30) })
		assert.Regexp(t, derived, PatientID(a))
	})
	t.Run("a QUBS patient id that looks derived cannot collide", func(t *testing.T) {
		a1 := with(func(a *qubs.Appointment) { a.PatientID = "" })
		a2 := with(func(a *qubs.Appointment) { a.PatientID = PatientID(a1) })
		assert.NotEqual(t, PatientID(a1), PatientID(a2))
	})
	t.Run("referrer depends on doctor and clinic", func(t *testing.T) {
		id := ReferrerID(&base)
		assert.Regexp(t, derived, id)
		assert.Equal(t, id, ReferrerID(with(func(a *qubs.Appointment) { a.PatientID = "other" })))
		assert.NotEqual(t, id, ReferrerID(with(func(a *qubs.Appointment) { a.ClinicName = "Other Clinic" })))
		assert.NotEqual(t, id, ReferrerID(with(func(a *qubs.Appointment) { a.DoctorName = "Dr Smyth" })))
		assert.NotEqual(t,
			ReferrerID(with(func(a *qubs.Appointment) { a.DoctorName, a.ClinicName = "ab", "c" })),
			ReferrerID(with(func(a *qubs.Appointment) { a.DoctorName, a.ClinicName = "a", "bc" })))
		assert.Empty(t, ReferrerID(with(func(a *qubs.Appointment) { a.DoctorName = "" })))
	})
	t.Run("referrer and clinic of the same name differ", func(t *testing.T) {
		a := with(func(a *qubs.Appointment) { a.DoctorName, a.ClinicName = "X", "" })
		b := with(func(a *qubs.Appointment) { a.DoctorName, a.ClinicName = "", "X" })
		assert.NotEqual(t, ReferrerID(a), ClinicID(b))
	})
	t.Run("clinic", func(t *testing.T) {
		assert.Regexp(t, derived, ClinicID(&base))
		assert.Empty(t, ClinicID(with(func(a *qubs.Appointment) { a.ClinicName = "" })))
	})
	t.Run("radiologist is the username", func(t *testing.T) {
		assert.Equal(t, "rsmith", RadiologistID(&base))
		assert.Equal(t, "b32-nuxg623bmzxxeqdfpbqw24dmmuxgg33n", RadiologistID(with(func(a *qubs.Appointment) { a.RadiologistUser.Username = "m.okafor@example.com" })))
		assert.Empty(t, RadiologistID(with(func(a *qubs.Appointment) { a.RadiologistUser = nil })))
		noName := RadiologistID(with(func(a *qubs.Appointment) { a.RadiologistUser.Username = "" }))
		assert.Regexp(t, derived, noName)
		assert.NotEqual(t, noName, RadiologistID(with(func(a *qubs.Appointment) { a.RadiologistUser.Username = ""; a.RadiologistUser.FirstName = "Jun" })))
	})
	t.Run("service request", func(t *testing.T) {
		id, err := ServiceRequestID("A/1")
		require.NoError(t, err)
		assert.Equal(t, "b32-iextc", id)
		_, err = ServiceRequestID("")
		require.ErrorIs(t, err, ErrUnrepresentable)
	})
}
