package mapping

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// QUBS files attachments and comments under an appointment: getting one
// back takes the appointment id and the record's guid. The FHIR id of such
// a record (DocumentReference, Binary, Communication, Flag) therefore
// carries both, so the server reads it with one QUBS call:
//
//	<ServiceRequestID(appointmentId)> "." <guid part>
//
// The guid part never contains ".", so the id splits at its last ".",
// whatever the appointment part holds. It is:
//
//   - a UUID (8-4-4-4-12 hex digits, either case, as QUBS sends them):
//     its 32 hex digits without the dashes, case kept;
//   - any other guid of [A-Za-z0-9-] that is not 32 hex digits and does
//     not start with "b32-": the guid itself;
//   - anything else: "b32-" and the lowercase unpadded base32 of its bytes.
//
// Every id has exactly one (appointment, guid) pair and every pair at
// most one id: the parse functions accept only the form the id functions
// produce. The whole id must fit FHIR's 64 characters: with a UUID guid
// that leaves 31 characters for the appointment part (an appointment id of
// up to 31 FHIR id characters, or 16 bytes when it needs encoding).
// Longer pairs are ErrUnrepresentable.

// recordID is the id of the record guid filed under appointmentID.
func recordID(appointmentID, guid string) (string, error) {
	appt, err := ServiceRequestID(appointmentID)
	if err != nil {
		return "", err
	}
	g, err := guidPart(guid)
	if err != nil {
		return "", err
	}
	id := appt + "." + g
	if len(id) > maxIDLen {
		// Neither id is in the message: errors get logged.
		return "", fmt.Errorf("%w: appointment and guid need %d characters, over %d", ErrUnrepresentable, len(id), maxIDLen)
	}
	return id, nil
}

// parseRecordID is the inverse of recordID.
func parseRecordID(id string) (appointmentID, guid string, err error) {
	if !validID(id) {
		return "", "", fmt.Errorf("%w: not [A-Za-z0-9-.]{1,64}", ErrInvalidID)
	}
	i := strings.LastIndexByte(id, '.')
	if i <= 0 {
		return "", "", fmt.Errorf("%w: no appointment part", ErrInvalidID)
	}
	appt, g := id[:i], id[i+1:]
	appointmentID, err = DecodeID(appt)
	if err != nil {
		return "", "", err
	}
	if enc, err := ServiceRequestID(appointmentID); err != nil || enc != appt {
		// A derived "h-" id decodes to itself but names no appointment.
		return "", "", fmt.Errorf("%w: appointment part is not a ServiceRequest id", ErrInvalidID)
	}
	guid, err = parseGUIDPart(g)
	if err != nil {
		return "", "", err
	}
	return appointmentID, guid, nil
}

func guidPart(guid string) (string, error) {
	switch {
	case guid == "":
		return "", fmt.Errorf("%w: empty guid", ErrUnrepresentable)
	case isUUID(guid):
		return strings.ReplaceAll(guid, "-", ""), nil
	case plainGUID(guid):
		return guid, nil
	case !utf8.ValidString(guid):
		return "", fmt.Errorf("%w: guid is not valid UTF-8", ErrUnrepresentable)
	}
	return EncodedPrefix + b32.EncodeToString([]byte(guid)), nil
}

func parseGUIDPart(g string) (string, error) {
	var guid string
	switch {
	case strings.HasPrefix(g, EncodedPrefix):
		b, err := b32.DecodeString(g[len(EncodedPrefix):])
		if err != nil {
			return "", fmt.Errorf("%w: malformed guid encoding", ErrInvalidID)
		}
		guid = string(b)
	case len(g) == 32 && allHex(g):
		guid = g[0:8] + "-" + g[8:12] + "-" + g[12:16] + "-" + g[16:20] + "-" + g[20:32]
	default:
		guid = g
	}
	if enc, err := guidPart(guid); err != nil || enc != g {
		return "", fmt.Errorf("%w: not a canonical guid part", ErrInvalidID)
	}
	return guid, nil
}

// isUUID reports whether s is 8-4-4-4-12 hex digits.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if s[i] != '-' {
				return false
			}
		} else if !isHex(s[i]) {
			return false
		}
	}
	return true
}

// plainGUID reports whether a guid can stand in an id as it is: FHIR id
// characters but ".", and not one of the other two forms.
func plainGUID(s string) bool {
	if len(s) == 32 && allHex(s) || strings.HasPrefix(s, EncodedPrefix) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return s != ""
}

func allHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// DocumentReferenceID is the DocumentReference id of the attachment guid
// of an appointment: the ServiceRequest id, ".", and the guid (a UUID
// without its dashes); MAPPING.md ("Record ids") has the exact form. It
// fails with ErrUnrepresentable when the pair does not fit in 64
// characters.
func DocumentReferenceID(appointmentID, guid string) (string, error) {
	return recordID(appointmentID, guid)
}

// ParseDocumentReferenceID returns the appointment id and attachment guid
// behind a DocumentReference id, or ErrInvalidID for an id
// DocumentReferenceID does not produce.
func ParseDocumentReferenceID(id string) (appointmentID, guid string, err error) {
	return parseRecordID(id)
}

// BinaryID is the id of the Binary holding an attachment's bytes: the same
// as its DocumentReference's id, so either leads to the other.
func BinaryID(appointmentID, guid string) (string, error) {
	return recordID(appointmentID, guid)
}

// ParseBinaryID is the inverse of BinaryID.
func ParseBinaryID(id string) (appointmentID, guid string, err error) {
	return parseRecordID(id)
}

// CommunicationID is the Communication id of the comment guid listed
// through an appointment. QUBS gets a comment back only through an
// appointment, patient-level comments included, so a patient-level
// comment has one Communication per appointment it is listed through.
func CommunicationID(appointmentID, guid string) (string, error) {
	return recordID(appointmentID, guid)
}

// ParseCommunicationID is the inverse of CommunicationID.
func ParseCommunicationID(id string) (appointmentID, guid string, err error) {
	return parseRecordID(id)
}

// FlagID is the Flag id of an alert: the same as the Communication id of
// the comment, which the Flag points to (flag-detail).
func FlagID(appointmentID, guid string) (string, error) {
	return recordID(appointmentID, guid)
}

// ParseFlagID is the inverse of FlagID.
func ParseFlagID(id string) (appointmentID, guid string, err error) {
	return parseRecordID(id)
}
