package mapping

import (
	"encoding/base64"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// fixer makes QUBS values FHIR can carry, recording in ExtOriginal what it
// had to change, as the appointment mapping does (sanitize.go): a string
// with control characters or invalid UTF-8, or a date-time whose year FHIR
// cannot write (0000, which JSON date-times allow).
type fixer struct{ orig []fhir.Extension }

// str returns s made FHIR-safe.
func (f *fixer) str(field, s string) string {
	if fhirSafe(s) {
		return s
	}
	f.keep(field, s)
	return safeString(s)
}

// strp is str for an optional element: nil for "", which FHIR cannot hold
// (an empty QUBS string reads back as absent, which QUBS gives the same
// meaning).
func (f *fixer) strp(field, s string) *string {
	if s == "" {
		return nil
	}
	return ptr(f.str(field, s))
}

// when formats a QUBS date-time as a FHIR instant or dateTime (RFC 3339
// with its own offset and full precision), nil when absent or when its
// year is outside 0001-9999; the latter is kept in ExtOriginal.
func (f *fixer) when(field string, t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := t.Format(time.RFC3339Nano)
	if y := t.Year(); y < 1 || y > 9999 {
		f.keep(field, s)
		return nil
	}
	return &s
}

func (f *fixer) keep(field, s string) {
	f.orig = append(f.orig, fhir.Extension{Url: ExtOriginal, Extension: []fhir.Extension{
		{Url: "field", ValueString: ptr(field)},
		{Url: "value", ValueBase64Binary: ptr(base64.StdEncoding.EncodeToString([]byte(s)))},
	}})
}

// userReference is a Reference to a QUBS user (UserSummaryResponse), who
// has no FHIR resource of their own: ExtUser holds the record exactly;
// display ("first last", else the username, else the initials) and
// identifier (the username, in the system the radiologist's Practitioner
// uses) are there for readers. nil for an absent user, and for "{}", which
// carries nothing (QUBS sends it in its examples; it reads back as absent).
func userReference(f *fixer, field string, u *qubs.UserSummary) *fhir.Reference {
	if u == nil || *u == (qubs.UserSummary{}) {
		return nil
	}
	r := &fhir.Reference{Type: ptr("Practitioner")}
	var sub []fhir.Extension
	for _, p := range []struct{ name, v string }{
		{"username", u.Username}, {"firstName", u.FirstName}, {"initials", u.Initials},
		{"lastName", u.LastName}, {"role", u.Role},
	} {
		if p.v != "" {
			sub = append(sub, fhir.Extension{Url: p.name, ValueString: ptr(f.str(field+"."+p.name, p.v))})
		}
	}
	r.Extension = []fhir.Extension{{Url: ExtUser, Extension: sub}}
	if u.Username != "" {
		r.Identifier = &fhir.Identifier{System: ptr(SystemUsername), Value: ptr(safeString(u.Username))}
	}
	display := u.FirstName + u.LastName
	if u.FirstName != "" && u.LastName != "" {
		display = u.FirstName + " " + u.LastName
	}
	for _, d := range []string{display, u.Username, u.Initials} {
		if d != "" {
			r.Display = ptr(safeString(d))
			break
		}
	}
	return r
}

// serviceRequestRef is the Reference to the ServiceRequest with id srID.
func serviceRequestRef(srID string) fhir.Reference {
	return fhir.Reference{Reference: ptr("ServiceRequest/" + srID), Type: ptr("ServiceRequest")}
}

// patientRef is the Reference to the Patient with id patientID, nil for "".
func patientRef(patientID string) *fhir.Reference {
	if patientID == "" {
		return nil
	}
	return &fhir.Reference{Reference: ptr("Patient/" + patientID), Type: ptr("Patient")}
}
