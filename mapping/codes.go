package mapping

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// normKey folds a QUBS enum-like string for lookup: trimmed, upper case,
// inner runs of spaces, '-' and '_' as one space. QUBS stores these as
// free text, so "Pending Reporting" and "pending_reporting" are the same.
func normKey(s string) string {
	return strings.Join(strings.FieldsFunc(strings.ToUpper(s), func(r rune) bool {
		return r == ' ' || r == '\t' || r == '-' || r == '_'
	}), " ")
}

// normBytes appends normKey(s) to dst. ASCII strings, nearly all QUBS
// enums, are folded here without allocating; callers switch on
// string(normBytes(buf[:0], s)), which the compiler does not copy.
func normBytes(dst []byte, s string) []byte {
	start := len(dst)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= utf8.RuneSelf:
			// ToUpper of non-ASCII text can change its length.
			return append(dst[:start], normKey(s)...)
		case c == ' ' || c == '\t' || c == '-' || c == '_':
			if n := len(dst); n > start && dst[n-1] != ' ' {
				dst = append(dst, ' ')
			}
			continue
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		}
		dst = append(dst, c)
	}
	if n := len(dst); n > start && dst[n-1] == ' ' {
		dst = dst[:n-1]
	}
	return dst
}

// requestStatus maps a QUBS appointment status. The pending-reporting
// operations only ever return PENDING REPORTING; the rest are mapped so a
// surprise does not read as a live worklist entry:
//   - cancelled and did-not-attend: revoked (the order will not be done);
//   - AUTHORISED: completed (the report is signed off);
//   - every other documented status, the cancellation list included (the
//     patient still waits for a slot): active;
//   - anything undocumented: unknown.
//
// The QUBS string is always kept in ExtStatus.
func requestStatus(s qubs.Status) fhir.RequestStatus {
	var buf [32]byte
	switch string(normBytes(buf[:0], string(s))) {
	case "PENDING REPORTING", "NOT ARRIVED", "ARRIVED", "CANCELLATION LIST",
		"DICTATION INPROGRESS", "DICTATION IN PROGRESS", "DICTATED", "TYPED", "AUTHORISING":
		return fhir.RequestStatusActive
	case "APPPOINTMENT CANCELLED", "APPOINTMENT CANCELLED", "CANCELLED", "DID NOT ATTEND":
		return fhir.RequestStatusRevoked
	case "AUTHORISED":
		return fhir.RequestStatusCompleted
	}
	return fhir.RequestStatusUnknown
}

// requestPriority maps a QUBS priority (free text) to FHIR
// request-priority. Anything else has no FHIR priority: calling
// "Semi-urgent" routine would understate it and urgent overstate it, so
// the element is left out and the original kept in ExtPriority.
func requestPriority(p string) (fhir.RequestPriority, bool) {
	var buf [32]byte
	switch string(normBytes(buf[:0], p)) {
	case "ROUTINE":
		return fhir.RequestPriorityRoutine, true
	case "URGENT":
		return fhir.RequestPriorityUrgent, true
	case "ASAP":
		return fhir.RequestPriorityAsap, true
	case "STAT":
		return fhir.RequestPriorityStat, true
	}
	return 0, false
}

// administrativeGender maps the QUBS gender string (free text: "F", "M",
// "X", "U" in practice). "X" is the Australian sex code for
// indeterminate/intersex/unspecified (AS 5017), which FHIR calls other.
// Unrecognised values are unknown; the caller keeps the original.
func administrativeGender(g string) fhir.AdministrativeGender {
	var buf [32]byte
	switch string(normBytes(buf[:0], g)) {
	case "M", "MALE":
		return fhir.AdministrativeGenderMale
	case "F", "FEMALE":
		return fhir.AdministrativeGenderFemale
	case "O", "OTHER", "X", "I", "INTERSEX", "INDETERMINATE":
		return fhir.AdministrativeGenderOther
	}
	return fhir.AdministrativeGenderUnknown
}

// dicomModality is one code of the DICOM DCM modality list (PS3.16 CID 29
// and CID 33) with its DCM display.
type dicomModality struct{ code, display string }

// modalities maps QUBS modality strings to DCM codes. QUBS keeps modality
// as free text; the DCM codes themselves map to themselves, plus the
// spellings practices use. "XR" and "X-RAY" become DX: plain film today is
// digital radiography, and CR (cassette-based computed radiography) is
// only used when QUBS says CR.
var modalities = func() map[string]dicomModality {
	m := map[string]dicomModality{}
	for _, d := range []dicomModality{
		{"CT", "Computed Tomography"},
		{"MR", "Magnetic Resonance"},
		{"US", "Ultrasound"},
		{"CR", "Computed Radiography"},
		{"DX", "Digital Radiography"},
		{"NM", "Nuclear Medicine"},
		{"MG", "Mammography"},
		{"PT", "Positron emission tomography (PET)"},
		{"XA", "X-Ray Angiography"},
		{"RF", "Radio Fluoroscopy"},
		{"BMD", "Bone Mineral Densitometry"},
		{"IO", "Intra-oral Radiography"},
		{"PX", "Panoramic X-Ray"},
		{"OT", "Other"},
	} {
		m[d.code] = d
	}
	for alias, code := range map[string]string{
		"XR": "DX", "X RAY": "DX", "XRAY": "DX", "PLAIN FILM": "DX", "GENERAL X RAY": "DX",
		"MRI": "MR", "ULTRASOUND": "US", "U/S": "US", "PET": "PT", "PET CT": "PT",
		"MAMMO": "MG", "MAMMOGRAPHY": "MG", "NUCLEAR MEDICINE": "NM", "NUC MED": "NM",
		"DEXA": "BMD", "DXA": "BMD", "BONE DENSITOMETRY": "BMD",
		"FLUORO": "RF", "FLUOROSCOPY": "RF", "ANGIO": "XA", "ANGIOGRAPHY": "XA",
		"OPG": "PX", "CAT": "CT",
	} {
		m[alias] = m[code]
	}
	return m
}()

// modalityCoding returns the DCM coding of a QUBS modality string.
func modalityCoding(mod string) (dicomModality, bool) {
	var buf [32]byte
	d, ok := modalities[string(normBytes(buf[:0], mod))]
	return d, ok
}

// validCode reports whether s is a FHIR code: no leading, trailing or
// doubled whitespace ([^\s]+(\s[^\s]+)*).
func validCode[S ~string | ~[]byte](s S) bool {
	// Without allocating, what strings.Join(strings.Fields(s), " ") == s
	// says: every white space rune is a single ' ' between two others.
	if len(s) == 0 {
		return false
	}
	prevSpace := true // a leading space is refused like a doubled one
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(string(s[i:min(len(s), i+utf8.UTFMax)]))
		i += size
		if !unicode.IsSpace(r) {
			prevSpace = false
			continue
		}
		if r != ' ' || prevSpace {
			return false
		}
		prevSpace = true
	}
	return !prevSpace
}
