package mapping

import (
	"encoding/base64"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// fhirSafe reports whether s can be a FHIR string as it is: valid UTF-8
// without control characters other than tab, line feed and carriage
// return.
func fhirSafe(s string) bool { return safeText(s, utf8.ValidString) }

// fhirSafeBytes is fhirSafe for a byte slice, without converting it.
func fhirSafeBytes(b []byte) bool { return safeText(b, utf8.Valid) }

// safeText is fhirSafe in one pass over ASCII rather than valid's and
// hasControl's two: every appointment's twenty-odd strings and service
// items are checked on every worklist page. Eight bytes at a time while
// they are ASCII at or above space, which is nearly all of QUBS text;
// from the first byte that is not, valid and hasControl finish.
func safeText[T string | []byte](s T, valid func(T) bool) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		// A byte with its high bit set, or one below 0x20 (the exact
		// "has a byte less than" test for bytes under 0x80).
		if (x|(x-0x20*lo)&^x)&hi != 0 {
			break
		}
	}
	for ; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return valid(s[i:]) && !hasControl(s[i:])
		}
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

// hasControl reports a C0 control character FHIR strings may not hold.
// They are ASCII, so no byte of a multi-byte UTF-8 sequence is mistaken
// for one.
func hasControl[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			return true
		}
	}
	return false
}

// safeString returns s with invalid UTF-8 and control characters replaced
// by U+FFFD.
func safeString(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' {
			return utf8.RuneError
		}
		return r
	}, s)
}

// sanitize returns a copy of a whose strings are all FHIR-safe, and the
// ExtOriginal extensions that restore what was replaced. a itself is not
// modified. Nearly always nothing needs replacing and a is returned as is.
func sanitize(a *qubs.Appointment) (*qubs.Appointment, []fhir.Extension) {
	if appointmentSafe(a) {
		// The common case, without the closures below (they allocate).
		return a, nil
	}
	var orig []fhir.Extension
	var c *qubs.Appointment
	copyOnWrite := func() *qubs.Appointment {
		if c == nil {
			cp := *a
			c = &cp
		}
		return c
	}
	fix := func(field string, s string, set func(*qubs.Appointment, string)) {
		if fhirSafe(s) {
			return
		}
		set(copyOnWrite(), safeString(s))
		orig = append(orig, fhir.Extension{Url: ExtOriginal, Extension: []fhir.Extension{
			{Url: "field", ValueString: ptr(field)},
			{Url: "value", ValueBase64Binary: ptr(base64.StdEncoding.EncodeToString([]byte(s)))},
		}})
	}
	fixp := func(field string, s *string, set func(*qubs.Appointment, *string)) {
		if s != nil {
			fix(field, *s, func(c *qubs.Appointment, v string) { set(c, &v) })
		}
	}
	fix("domain", a.Domain, func(c *qubs.Appointment, v string) { c.Domain = v })
	fix("appointmentId", a.AppointmentID, func(c *qubs.Appointment, v string) { c.AppointmentID = v })
	fix("status", string(a.Status), func(c *qubs.Appointment, v string) { c.Status = qubs.Status(v) })
	fix("scheduledSite", a.ScheduledSite, func(c *qubs.Appointment, v string) { c.ScheduledSite = v })
	fixp("appointmentDate", a.AppointmentDate, func(c *qubs.Appointment, v *string) { c.AppointmentDate = v })
	fixp("startTime", a.StartTime, func(c *qubs.Appointment, v *string) { c.StartTime = v })
	fixp("endTime", a.EndTime, func(c *qubs.Appointment, v *string) { c.EndTime = v })
	fix("patientId", a.PatientID, func(c *qubs.Appointment, v string) { c.PatientID = v })
	fix("patientName", a.PatientName, func(c *qubs.Appointment, v string) { c.PatientName = v })
	fix("firstName", a.FirstName, func(c *qubs.Appointment, v string) { c.FirstName = v })
	fix("lastName", a.LastName, func(c *qubs.Appointment, v string) { c.LastName = v })
	fixp("dateOfBirth", a.DateOfBirth, func(c *qubs.Appointment, v *string) { c.DateOfBirth = v })
	fix("gender", a.Gender, func(c *qubs.Appointment, v string) { c.Gender = v })
	fix("modality", a.Modality, func(c *qubs.Appointment, v string) { c.Modality = v })
	fix("studyDescription", a.StudyDescription, func(c *qubs.Appointment, v string) { c.StudyDescription = v })
	fix("clinicalInfo", a.ClinicalInfo, func(c *qubs.Appointment, v string) { c.ClinicalInfo = v })
	fix("doctorName", a.DoctorName, func(c *qubs.Appointment, v string) { c.DoctorName = v })
	fix("clinicName", a.ClinicName, func(c *qubs.Appointment, v string) { c.ClinicName = v })
	fix("priority", a.Priority, func(c *qubs.Appointment, v string) { c.Priority = v })
	fix("studyInstanceUid", a.StudyInstanceUID, func(c *qubs.Appointment, v string) { c.StudyInstanceUID = v })
	if u := a.RadiologistUser; u != nil {
		user := func(c *qubs.Appointment) *qubs.UserSummary {
			if c.RadiologistUser == a.RadiologistUser {
				cp := *u
				c.RadiologistUser = &cp
			}
			return c.RadiologistUser
		}
		fix("radiologistUser.username", u.Username, func(c *qubs.Appointment, v string) { user(c).Username = v })
		fix("radiologistUser.firstName", u.FirstName, func(c *qubs.Appointment, v string) { user(c).FirstName = v })
		fix("radiologistUser.initials", u.Initials, func(c *qubs.Appointment, v string) { user(c).Initials = v })
		fix("radiologistUser.lastName", u.LastName, func(c *qubs.Appointment, v string) { user(c).LastName = v })
		fix("radiologistUser.role", u.Role, func(c *qubs.Appointment, v string) { user(c).Role = v })
	}
	for i, it := range a.ServiceItems {
		fix("serviceItems["+strconv.Itoa(i)+"]", string(it), func(c *qubs.Appointment, v string) {
			if len(c.ServiceItems) > 0 && &c.ServiceItems[0] == &a.ServiceItems[0] {
				c.ServiceItems = append([]qubs.ServiceItem(nil), a.ServiceItems...)
			}
			c.ServiceItems[i] = qubs.ServiceItem(v)
		})
	}
	if c == nil {
		return a, nil
	}
	return c, orig
}

// appointmentSafe reports whether sanitize has nothing to replace in a.
func appointmentSafe(a *qubs.Appointment) bool {
	safeP := func(s *string) bool { return s == nil || fhirSafe(*s) }
	ok := fhirSafe(a.Domain) && fhirSafe(a.AppointmentID) && fhirSafe(string(a.Status)) && fhirSafe(a.ScheduledSite) &&
		safeP(a.AppointmentDate) && safeP(a.StartTime) && safeP(a.EndTime) && fhirSafe(a.PatientID) &&
		fhirSafe(a.PatientName) && fhirSafe(a.FirstName) && fhirSafe(a.LastName) && safeP(a.DateOfBirth) &&
		fhirSafe(a.Gender) && fhirSafe(a.Modality) && fhirSafe(a.StudyDescription) && fhirSafe(a.ClinicalInfo) &&
		fhirSafe(a.DoctorName) && fhirSafe(a.ClinicName) && fhirSafe(a.Priority) && fhirSafe(a.StudyInstanceUID)
	if u := a.RadiologistUser; ok && u != nil {
		ok = fhirSafe(u.Username) && fhirSafe(u.FirstName) && fhirSafe(u.Initials) && fhirSafe(u.LastName) && fhirSafe(u.Role)
	}
	for _, it := range a.ServiceItems {
		ok = ok && fhirSafeBytes(it)
	}
	return ok
}
