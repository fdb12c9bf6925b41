package mapping

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// Errors the id functions return, for errors.Is.
var (
	// ErrInvalidID is returned by DecodeID for a string that is not a FHIR
	// id or not a well-formed encoding.
	ErrInvalidID = errors.New("mapping: invalid FHIR id")
	// ErrUnrepresentable is returned for QUBS data that no FHIR id can
	// carry: an empty id, invalid UTF-8, or one whose encoding exceeds 64
	// characters.
	ErrUnrepresentable = errors.New("mapping: value cannot be represented")
)

const (
	// EncodedPrefix starts every id EncodeID had to encode. Any input that
	// itself starts with it is encoded too, so a pass-through id can never
	// be mistaken for an encoded one.
	EncodedPrefix = "b32-"
	// DerivedPrefix starts every id the bridge makes up by hashing (a
	// referrer, a clinic, a patient with no patientId). EncodeID encodes
	// any input starting with it, so a derived id never equals a QUBS id.
	DerivedPrefix = "h-"

	maxIDLen = 64
)

// b32 is lowercase RFC 4648 base32 without padding: FHIR ids allow only
// [A-Za-z0-9\-.], and lowercase keeps the encoded form visibly distinct
// from the uppercase ids QUBS tends to use.
var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// maxEncodedInput is the longest input, in bytes, whose encoding fits in
// 64 characters: 4 + ceil(8n/5) <= 64.
const maxEncodedInput = (maxIDLen - len(EncodedPrefix)) * 5 / 8

// validID reports whether s matches FHIR's id type: [A-Za-z0-9\-.]{1,64}.
func validID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// reserved reports whether a valid id must still be encoded because it
// would collide with the bridge's own id forms.
func reserved(s string) bool {
	return strings.HasPrefix(s, EncodedPrefix) || strings.HasPrefix(s, DerivedPrefix)
}

// EncodeID returns the FHIR id for a QUBS id. A string that is already a
// valid FHIR id passes through unchanged, unless it starts with
// EncodedPrefix or DerivedPrefix; anything else becomes EncodedPrefix
// followed by the lowercase, unpadded base32 of its UTF-8 bytes. The
// result is deterministic and DecodeID reverses it.
//
// It fails with ErrUnrepresentable for an empty string, invalid UTF-8, or
// a string whose encoding would exceed 64 characters (more than 37 bytes).
func EncodeID(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("%w: empty id", ErrUnrepresentable)
	}
	if validID(s) && !reserved(s) {
		return s, nil
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: id is not valid UTF-8", ErrUnrepresentable)
	}
	if len(s) > maxEncodedInput {
		// The id itself is not in the message: patient ids are
		// identifiers, and errors get logged.
		return "", fmt.Errorf("%w: id of %d bytes needs encoding and would exceed %d characters (limit %d bytes)",
			ErrUnrepresentable, len(s), maxIDLen, maxEncodedInput)
	}
	return EncodedPrefix + b32.EncodeToString([]byte(s)), nil
}

// DecodeID returns the QUBS id behind a FHIR id: the inverse of EncodeID.
// Ids without EncodedPrefix decode to themselves; that includes derived
// ids (DerivedPrefix), which name no QUBS id but are valid resource ids.
//
// It fails with ErrInvalidID for a string that is not a FHIR id, and for an
// encoded id that is malformed or not the one EncodeID would produce (so
// that each QUBS id has exactly one FHIR id).
func DecodeID(id string) (string, error) {
	if !validID(id) {
		return "", fmt.Errorf("%w: not [A-Za-z0-9-.]{1,64}", ErrInvalidID)
	}
	rest, ok := strings.CutPrefix(id, EncodedPrefix)
	if !ok {
		return id, nil
	}
	b, err := b32.DecodeString(rest)
	if err != nil {
		return "", fmt.Errorf("%w: malformed %s encoding", ErrInvalidID, EncodedPrefix)
	}
	s := string(b)
	if enc, err := EncodeID(s); err != nil || enc != id {
		// Empty, not UTF-8, non-zero trailing bits (base32 ignores them),
		// or an id that passes through unchanged and so has another
		// canonical form: each QUBS id has exactly one FHIR id.
		return "", fmt.Errorf("%w: not a canonical %s encoding", ErrInvalidID, EncodedPrefix)
	}
	return s, nil
}

// derivedID hashes a kind tag and parts into an id in the DerivedPrefix
// space: "h-" and 32 lowercase base32 characters (160 bits of SHA-256).
// The tag keeps ids of different derivations apart; NUL separators keep
// ("ab","c") and ("a","bc") apart.
func derivedID(kind string, parts ...string) string {
	// One buffer on the stack and one string out: every worklist entry
	// derives two or three of these.
	var in [256]byte
	b := append(in[:0], kind...)
	for _, p := range parts {
		b = append(b, 0)
		b = append(b, p...)
	}
	sum := sha256.Sum256(b)
	var out [len(DerivedPrefix) + 32]byte
	copy(out[:], DerivedPrefix)
	b32.Encode(out[len(DerivedPrefix):], sum[:20])
	return string(out[:])
}

// ServiceRequestID is the ServiceRequest id of an appointment: EncodeID of
// the appointment id.
func ServiceRequestID(appointmentID string) (string, error) {
	return EncodeID(appointmentID)
}

// PatientID is the Patient id of an appointment's patient: EncodeID of
// patientId. An appointment without a patientId gets an id derived from
// its appointment id, so each such appointment has its own Patient (QUBS
// gives nothing to tell two unidentified patients apart). A patientId too
// long to encode gets an id derived from the patientId.
func PatientID(a *qubs.Appointment) string {
	if a.PatientID != "" {
		if id, err := EncodeID(a.PatientID); err == nil {
			return id
		}
		return derivedID("patient", a.PatientID)
	}
	return derivedID("appointment-patient", a.AppointmentID)
}

// ReferrerID is the Practitioner id of the referring doctor, "" when
// doctorName is empty. QUBS has no id for referrers, so it is derived from
// doctorName and clinicName together: "Dr Smith" at two clinics is more
// likely two people than one, and a Practitioner must not merge them.
func ReferrerID(a *qubs.Appointment) string {
	if a.DoctorName == "" {
		return ""
	}
	return derivedID("referrer", a.DoctorName, a.ClinicName)
}

// RadiologistID is the Practitioner id of the assigned radiologist, ""
// when radiologistUser is absent: EncodeID of the username, or an id
// derived from all the user's fields when the username is empty or too
// long to encode.
func RadiologistID(a *qubs.Appointment) string {
	u := a.RadiologistUser
	if u == nil {
		return ""
	}
	if u.Username != "" {
		if id, err := EncodeID(u.Username); err == nil {
			return id
		}
	}
	return derivedID("user", u.Username, u.FirstName, u.Initials, u.LastName, u.Role)
}

// ClinicID is the Organization id of the referring clinic, "" when
// clinicName is empty: derived from clinicName, the only thing QUBS gives.
func ClinicID(a *qubs.Appointment) string {
	if a.ClinicName == "" {
		return ""
	}
	return derivedID("clinic", a.ClinicName)
}
