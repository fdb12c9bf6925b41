package mapping

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/internal/jsonw"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/internal/wallclock"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// Mapped is an appointment ready to be emitted: the ids of the resources
// FromAppointment would build, and encoders that write those resources as
// FHIR JSON straight from the appointment.
//
// The worklist is the bridge's hot path: building the samply models for
// every appointment of a page and having encoding/json walk them cost about
// 100 µs and 170 allocations an appointment. The encoders here write the
// same bytes (FromAppointment followed by the models' MarshalJSON stays the
// reference, and the tests compare the two over the golden corpus, every
// seeded simulator appointment and random ones) for a fraction of that.
// FromAppointment and MAPPING.md remain the description of the mapping.
type Mapped struct {
	// ID is the ServiceRequest id.
	ID string
	// Status is ServiceRequest.status.
	Status fhir.RequestStatus
	// PatientID, ReferrerID, RadiologistID and ClinicID are the ids of the
	// Patient, the referring and the assigned Practitioner, and the
	// referring Organization; "" for each the appointment does not have.
	PatientID, ReferrerID, RadiologistID, ClinicID string

	a         *qubs.Appointment // sanitized, see sanitize
	apptID    string            // as QUBS sent it
	originals []fhir.Extension
	loc       *time.Location
}

// Map maps an appointment for emission. It fails exactly when
// FromAppointment fails (ErrUnrepresentable). The appointment must not be
// changed while the Mapped is in use: the encoders read it.
func Map(orig *qubs.Appointment, z *Zones) (Mapped, error) {
	if orig == nil {
		return Mapped{}, errors.New("mapping: nil appointment")
	}
	srID, err := ServiceRequestID(orig.AppointmentID)
	if err != nil {
		return Mapped{}, fmt.Errorf("mapping appointment: %w", err)
	}
	a, originals := sanitize(orig)
	m := Mapped{ID: srID, Status: requestStatus(a.Status), a: a, apptID: orig.AppointmentID, originals: originals, loc: z.For(a.ScheduledSite)}
	if hasPatient(a) {
		m.PatientID = PatientID(orig)
	}
	m.ReferrerID = ReferrerID(orig)
	m.RadiologistID = RadiologistID(orig)
	m.ClinicID = ClinicID(orig)
	return m, nil
}

func hasPatient(a *qubs.Appointment) bool {
	return a.PatientID != "" || a.PatientName != "" || a.FirstName != "" || a.LastName != "" ||
		a.DateOfBirth != nil || a.Gender != ""
}

// Identifiers yields ServiceRequest.identifier as (system, value) pairs.
func (m *Mapped) Identifiers(yield func(system, value string) bool) {
	if !yield(SystemAppointmentID, m.a.AppointmentID) {
		return
	}
	if m.a.StudyInstanceUID != "" {
		yield(SystemDICOMUID, "urn:oid:"+m.a.StudyInstanceUID)
	}
}

// Requester is the type and id ServiceRequest.requester points at: the
// referring doctor, else the referring clinic; "" and "" for neither.
func (m *Mapped) Requester() (typ, id string) {
	switch {
	case m.ReferrerID != "":
		return "Practitioner", m.ReferrerID
	case m.ClinicID != "":
		return "Organization", m.ClinicID
	}
	return "", ""
}

// AppendRelated appends the resource ref ("Patient/id", "Practitioner/id"
// or "Organization/id") names, when the ServiceRequest references it; ok
// is false, and dst unchanged, otherwise.
func (m *Mapped) AppendRelated(dst []byte, ref string) (_ []byte, ok bool) {
	typ, id, _ := strings.Cut(ref, "/")
	if id == "" {
		return dst, false
	}
	switch {
	case typ == "Patient" && id == m.PatientID:
		return m.AppendPatient(dst), true
	// The radiologist first: FromAppointment's table of related
	// resources let it win a (never seen) clash of ids.
	case typ == "Practitioner" && id == m.RadiologistID:
		return m.AppendRadiologist(dst), true
	case typ == "Practitioner" && id == m.ReferrerID:
		return m.AppendReferrer(dst), true
	case typ == "Organization" && id == m.ClinicID:
		return m.AppendClinic(dst), true
	}
	return dst, false
}

// extList writes the members of a JSON array member one at a time,
// leaving the member out when it turns out empty, as omitempty does.
type extList struct {
	mark int // len(dst) before the member, to take it back
	n    int
}

func beginList(dst []byte, name string) ([]byte, extList) {
	l := extList{mark: len(dst)}
	dst = jsonw.Field(dst, name)
	return append(dst, '['), l
}

func (l *extList) next(dst []byte) []byte {
	if l.n > 0 {
		dst = append(dst, ',')
	}
	l.n++
	return dst
}

func (l *extList) end(dst []byte) []byte {
	if l.n == 0 {
		return dst[:l.mark]
	}
	return append(dst, ']')
}

// stringExt appends {"url":url,"valueString":v}; qurl is url quoted.
func stringExt[S ~string | ~[]byte](dst []byte, qurl string, v S) []byte {
	dst = append(append(dst, `{"url":`...), qurl...)
	return append(jsonw.Escaped(append(dst, `,"valueString":"`...), v), '"', '}')
}

// rawField appends "name":quoted, with quoted a JSON string already.
func rawField(dst []byte, name, quoted string) []byte {
	return append(jsonw.Field(dst, name), quoted...)
}

// quote is s as a JSON string, for the constant URLs every entry repeats:
// escaped once here rather than scanned again for every entry.
func quote(s string) string { return string(jsonw.String(nil, s)) }

// The URLs and systems the encoders write, quoted.
var (
	qSystemUsername         = quote(SystemUsername)
	qSystemServiceItem      = quote(SystemServiceItem)
	qExtServiceItemCount    = quote(ExtServiceItemCount)
	qExtReferringClinic     = quote(ExtReferringClinic)
	qExtReportNeededBy      = quote(ExtReportNeededBy)
	qExtAppointmentDate     = quote(ExtAppointmentDate)
	qExtDataAbsentReason    = quote(ExtDataAbsentReason)
	qExtDateOfBirth         = quote(ExtDateOfBirth)
	qExtDerivedText         = quote(ExtDerivedText)
	qExtDomain              = quote(ExtDomain)
	qExtEndTime             = quote(ExtEndTime)
	qExtGender              = quote(ExtGender)
	qExtInitials            = quote(ExtInitials)
	qExtPriority            = quote(ExtPriority)
	qExtServiceItem         = quote(ExtServiceItem)
	qExtStartTime           = quote(ExtStartTime)
	qExtStatus              = quote(ExtStatus)
	qExtUserRole            = quote(ExtUserRole)
	qSystemAppointmentID    = quote(SystemAppointmentID)
	qSystemDICOM            = quote(SystemDICOM)
	qSystemDICOMUID         = quote(SystemDICOMUID)
	qSystemPatientID        = quote(SystemPatientID)
	qSystemSNOMED           = quote(SystemSNOMED)
	qSystemV2IdentifierType = quote(SystemV2IdentifierType)
)

// occurrenceParts is what occurrence() decides, without the models.
type occurrenceParts struct {
	keepDate, keepStart, keepEnd bool // kept verbatim in extensions
	dateTime                     bool // occurrenceDateTime is appointmentDate
	start, end                   bool // occurrencePeriod members
	date, endDate                time.Time
	startClock, endClock         int
}

func occurrenceOf(a *qubs.Appointment) occurrenceParts {
	var o occurrenceParts
	present := func(v *string) bool { return v != nil && *v != "" }
	date, ok := parseDate(a.AppointmentDate)
	if !ok {
		o.keepDate, o.keepStart, o.keepEnd = present(a.AppointmentDate), present(a.StartTime), present(a.EndTime)
		return o
	}
	start, okStart := parseClock(a.StartTime)
	end, okEnd := parseClock(a.EndTime)
	o.keepStart, o.keepEnd = !okStart && present(a.StartTime), !okEnd && present(a.EndTime)
	if !okStart && !okEnd {
		o.dateTime = true
		return o
	}
	o.date, o.endDate = date, date
	o.start, o.startClock = okStart, start
	o.end, o.endClock = okEnd, end
	if okStart && okEnd && end < start {
		o.endDate = date.AddDate(0, 0, 1)
	}
	return o
}

// appendLocalDateTime is localDateTime, appended.
func appendLocalDateTime(dst []byte, loc *time.Location, date time.Time, clock int) []byte {
	y, mo, d := date.Date()
	h, mi, s := clock/3600, clock/60%60, clock%60
	off := wallclock.Offset(loc, y, mo, d, h, mi, s)
	if y < 1 || y > 9999 { // 9999-12-31 and an end past midnight
		dst = append(dst, '"')
		dst = time.Date(y, mo, d, h, mi, s, 0, time.UTC).AppendFormat(dst, "2006-01-02T15:04:05")
		return append(formatOffset(dst, off), '"')
	}
	// By hand, what AppendFormat makes of these fields: it interprets its
	// layout on every call, twice per worklist entry.
	dst = append(dst, '"', byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-')
	dst = append(appendTwo(dst, int(mo)), '-')
	dst = append(appendTwo(dst, d), 'T')
	dst = append(appendTwo(dst, h), ':')
	dst = append(appendTwo(dst, mi), ':')
	return append(formatOffset(appendTwo(dst, s), off), '"')
}

// appendTwo appends 0 <= v < 100 as two digits.
func appendTwo(dst []byte, v int) []byte {
	return append(dst, byte('0'+v/10), byte('0'+v%10))
}

// Occurrence returns the ServiceRequest's occurrence as
// AppendServiceRequest writes it: occurrenceDateTime, or the start and
// end of occurrencePeriod; "" for each it has not. The worklist index's
// date columns come from these, and a walk needs them for appointments
// it does not encode.
func (m *Mapped) Occurrence() (dateTime, start, end string) {
	occ := occurrenceOf(m.a)
	if occ.dateTime {
		return *m.a.AppointmentDate, "", ""
	}
	text := func(date time.Time, clock int) string {
		q := appendLocalDateTime(nil, m.loc, date, clock)
		return string(q[1 : len(q)-1]) // without the quotes
	}
	if occ.start {
		start = text(occ.date, occ.startClock)
	}
	if occ.end {
		end = text(occ.endDate, occ.endClock)
	}
	return "", start, end
}

// AppendServiceRequest appends the ServiceRequest as compact FHIR JSON,
// byte for byte what encoding/json makes of FromAppointment's model.
func (m *Mapped) AppendServiceRequest(dst []byte) []byte {
	a := m.a
	dst = jsonw.String(append(dst, `{"id":`...), m.ID)
	prio, hasPrio := requestPriority(a.Priority)
	occ := occurrenceOf(a)

	// Extensions, in FromAppointment's order.
	dst, l := beginList(dst, "extension")
	if a.Domain != "" {
		dst = stringExt(l.next(dst), qExtDomain, a.Domain)
	}
	if a.Status != "" {
		dst = stringExt(l.next(dst), qExtStatus, string(a.Status))
	}
	if a.Priority != "" && (!hasPrio || prio.Code() != a.Priority) {
		dst = stringExt(l.next(dst), qExtPriority, a.Priority)
	}
	if t := a.ReportNeededBy; t != nil {
		dst = rawField(append(l.next(dst), '{'), "url", qExtReportNeededBy)
		if y := t.Year(); y < 1 || y > 9999 {
			dst = jsonw.Field(dst, "valueString")
		} else {
			dst = jsonw.Field(dst, "valueDateTime")
		}
		// RFC 3339 is digits and "-:.TZ+": nothing to escape.
		dst = append(t.AppendFormat(append(dst, '"'), time.RFC3339Nano), '"', '}')
	}
	if m.ClinicID != "" {
		dst = rawField(append(l.next(dst), '{'), "url", qExtReferringClinic)
		dst = m.appendClinicRef(jsonw.Field(dst, "valueReference"))
		dst = append(dst, '}')
	}
	if occ.keepDate {
		dst = stringExt(l.next(dst), qExtAppointmentDate, *a.AppointmentDate)
	}
	if occ.keepStart {
		dst = stringExt(l.next(dst), qExtStartTime, *a.StartTime)
	}
	if occ.keepEnd {
		dst = stringExt(l.next(dst), qExtEndTime, *a.EndTime)
	}
	for i := range m.originals {
		dst = appendExtension(l.next(dst), &m.originals[i])
	}
	if a.ServiceItems != nil {
		dst = rawField(append(l.next(dst), '{'), "url", qExtServiceItemCount)
		dst = append(jsonw.Int(jsonw.Field(dst, "valueUnsignedInt"), len(a.ServiceItems)), '}')
		for _, it := range a.ServiceItems {
			raw := []byte(it)
			if len(it) == 0 {
				raw = []byte("null") // what the item marshals as
			}
			dst = stringExt(l.next(dst), qExtServiceItem, raw)
		}
	}
	dst = l.end(dst)

	dst = m.appendIdentifiers(dst)

	dst = jsonw.StringField(dst, "status", m.Status.Code())
	dst = append(dst, `,"intent":"order","category":[{"coding":[{`...)
	dst = rawField(dst, "system", qSystemSNOMED)
	dst = jsonw.StringField(dst, "code", SNOMEDImagingProcedure)
	dst = append(dst, `,"display":"Imaging procedure"}],"text":"Imaging"}]`...)
	if hasPrio {
		dst = jsonw.StringField(dst, "priority", prio.Code())
	}

	// code: studyCode.
	dst = append(jsonw.Field(dst, "code"), '{')
	if a.StudyDescription == "" {
		dst = jsonw.Field(dst, "extension")
		dst = append(rawField(append(dst, "[{"...), "url", qExtDerivedText), `,"valueBoolean":true}]`...)
	}
	dst, l = beginList(dst, "coding")
	for _, it := range a.ServiceItems {
		code, display, ok, sure := serviceItemCodeFast(it)
		if !sure {
			c, d, okSlow := serviceItemCode(it)
			code, display, ok = []byte(c), []byte(d), okSlow
		}
		if !ok {
			continue
		}
		dst = rawField(append(l.next(dst), '{'), "system", qSystemServiceItem)
		dst = append(jsonw.Escaped(append(jsonw.Field(dst, "code"), '"'), code), '"')
		if len(display) > 0 {
			dst = append(jsonw.Escaped(append(jsonw.Field(dst, "display"), '"'), display), '"')
		}
		dst = append(dst, '}')
	}
	dst = l.end(dst)
	text := a.StudyDescription
	if text == "" {
		text = "Imaging study"
		if a.Modality != "" {
			text = a.Modality
		}
	}
	dst = append(jsonw.StringField(dst, "text", text), '}')

	if a.Modality != "" {
		dst = append(jsonw.Field(dst, "orderDetail"), "[{"...)
		if d, ok := modalityCoding(a.Modality); ok {
			dst = rawField(append(dst, `"coding":[{`...), "system", qSystemDICOM)
			dst = jsonw.StringField(dst, "code", d.code)
			dst = append(jsonw.StringField(dst, "display", d.display), "}]"...)
		}
		dst = append(jsonw.StringField(dst, "text", a.Modality), "}]"...)
	}

	dst = m.appendSubject(dst, "subject")

	switch {
	case occ.dateTime:
		dst = jsonw.StringField(dst, "occurrenceDateTime", *a.AppointmentDate)
	case occ.start || occ.end:
		dst = append(jsonw.Field(dst, "occurrencePeriod"), '{')
		if occ.start {
			dst = appendLocalDateTime(jsonw.Field(dst, "start"), m.loc, occ.date, occ.startClock)
		}
		if occ.end {
			dst = appendLocalDateTime(jsonw.Field(dst, "end"), m.loc, occ.endDate, occ.endClock)
		}
		dst = append(dst, '}')
	}

	switch {
	case m.ReferrerID != "":
		dst = append(jsonw.Field(dst, "requester"), '{')
		dst = appendRef(dst, "Practitioner", m.ReferrerID)
		dst = append(jsonw.StringField(dst, "display", a.DoctorName), '}')
	case m.ClinicID != "":
		// With no doctor the clinic is the requester.
		dst = m.appendClinicRef(jsonw.Field(dst, "requester"))
	}
	if m.RadiologistID != "" {
		dst = append(m.appendRadiologistRef(append(jsonw.Field(dst, "performer"), '[')), ']')
	}
	if a.ScheduledSite != "" {
		dst = append(jsonw.StringField(append(jsonw.Field(dst, "locationCode"), "[{"...), "text", a.ScheduledSite), "}]"...)
	}
	if a.ClinicalInfo != "" {
		dst = append(jsonw.StringField(append(jsonw.Field(dst, "reasonCode"), "[{"...), "text", a.ClinicalInfo), "}]"...)
	}
	return append(dst, `,"resourceType":"ServiceRequest"}`...)
}

// appendRef appends `"reference":"typ/id","type":"typ"` inside an object.
func appendRef(dst []byte, typ, id string) []byte {
	dst = append(jsonw.Field(dst, "reference"), '"')
	dst = append(append(dst, typ...), '/')
	dst = append(jsonw.Escaped(dst, id), '"')
	return jsonw.StringField(dst, "type", typ)
}

func (m *Mapped) appendClinicRef(dst []byte) []byte {
	dst = appendRef(append(dst, '{'), "Organization", m.ClinicID)
	return append(jsonw.StringField(dst, "display", m.a.ClinicName), '}')
}

// appendRadiologistText appends radiologist's name.text as a JSON string:
// first and last name with a space between when both are there. sanitize
// made both valid UTF-8, so they can be escaped one at a time.
func appendRadiologistText(dst []byte, u *qubs.UserSummary) []byte {
	dst = jsonw.Escaped(append(dst, '"'), u.FirstName)
	if u.FirstName != "" && u.LastName != "" {
		dst = append(dst, ' ')
	}
	return append(jsonw.Escaped(dst, u.LastName), '"')
}

// appendExtension appends the extensions sanitize makes (ExtOriginal and
// its parts); other value types do not occur there.
func appendExtension(dst []byte, e *fhir.Extension) []byte {
	dst = append(dst, '{')
	if len(e.Extension) > 0 {
		dst = append(jsonw.Field(dst, "extension"), '[')
		for i := range e.Extension {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendExtension(dst, &e.Extension[i])
		}
		dst = append(dst, ']')
	}
	dst = jsonw.StringField(dst, "url", e.Url)
	if e.ValueBase64Binary != nil {
		dst = jsonw.StringField(dst, "valueBase64Binary", *e.ValueBase64Binary)
	}
	if e.ValueString != nil {
		dst = jsonw.StringField(dst, "valueString", *e.ValueString)
	}
	return append(dst, '}')
}

// AppendPatient appends the Patient, or nothing when the appointment has
// none (PatientID is "").
func (m *Mapped) AppendPatient(dst []byte) []byte {
	if m.PatientID == "" {
		return dst
	}
	a := m.a
	dst = jsonw.String(append(dst, `{"id":`...), m.PatientID)
	_, dobOK := parseDate(a.DateOfBirth)
	var g fhir.AdministrativeGender
	if a.Gender != "" {
		g = administrativeGender(a.Gender)
	}
	dst, l := beginList(dst, "extension")
	if !dobOK && a.DateOfBirth != nil && *a.DateOfBirth != "" {
		dst = stringExt(l.next(dst), qExtDateOfBirth, *a.DateOfBirth)
	}
	if a.Gender != "" && g.Code() != a.Gender {
		dst = stringExt(l.next(dst), qExtGender, a.Gender)
	}
	dst = l.end(dst)
	if a.PatientID != "" {
		dst = append(jsonw.Field(dst, "identifier"), `[{"use":"usual","type":{"coding":[{`...)
		dst = rawField(dst, "system", qSystemV2IdentifierType)
		dst = append(dst, `,"code":"MR","display":"Medical record number"}]}`...)
		dst = rawField(dst, "system", qSystemPatientID)
		dst = append(jsonw.StringField(dst, "value", a.PatientID), "}]"...)
	}
	dst = appendName(dst, a.PatientName, a.FirstName, a.LastName, "")
	if a.Gender != "" {
		dst = jsonw.StringField(dst, "gender", g.Code())
	}
	if dobOK {
		dst = jsonw.StringField(dst, "birthDate", *a.DateOfBirth)
	}
	return append(dst, `,"resourceType":"Patient"}`...)
}

// appendName appends "name":[HumanName] as humanName builds it, with
// prefix when not "", and nothing when every part is empty.
func appendName(dst []byte, text, given, family, prefix string) []byte {
	if text == "" && given == "" && family == "" {
		return dst
	}
	dst = append(jsonw.Field(dst, "name"), "[{"...)
	if text != "" {
		dst = jsonw.StringField(dst, "text", text)
	}
	return append(appendNameParts(dst, given, family, prefix), "}]"...)
}

// appendNameParts appends HumanName's family, given and prefix members.
func appendNameParts(dst []byte, given, family, prefix string) []byte {
	if family != "" {
		dst = jsonw.StringField(dst, "family", family)
	}
	if given != "" {
		dst = append(jsonw.String(append(jsonw.Field(dst, "given"), '['), given), ']')
	}
	if prefix != "" {
		dst = append(jsonw.String(append(jsonw.Field(dst, "prefix"), '['), prefix), ']')
	}
	return dst
}

// AppendReferrer appends the referring doctor's Practitioner, or nothing
// when there is none.
func (m *Mapped) AppendReferrer(dst []byte) []byte {
	if m.ReferrerID == "" {
		return dst
	}
	dst = jsonw.String(append(dst, `{"id":`...), m.ReferrerID)
	dst = appendName(dst, m.a.DoctorName, "", "", honorific(m.a.DoctorName))
	return append(dst, `,"resourceType":"Practitioner"}`...)
}

// honorific is referrer's prefix: the first word of name when it is one of
// honorifics and more words follow; "" otherwise.
func honorific(name string) string {
	// strings.Fields without the slice: the first field, and whether a
	// second one follows.
	start, end := -1, -1
	second := false
	for i, r := range name {
		space := unicode.IsSpace(r)
		switch {
		case start < 0 && !space:
			start = i
		case start >= 0 && end < 0 && space:
			end = i
		case end >= 0 && !space:
			second = true
		}
		if second {
			break
		}
	}
	if !second {
		return ""
	}
	f := name[start:end]
	var buf [16]byte
	if len(f) <= len(buf) && isASCIIString(f) {
		low := buf[:len(f)]
		for i := 0; i < len(f); i++ {
			c := f[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			low[i] = c
		}
		if honorifics[string(low)] {
			return f
		}
		return ""
	}
	if honorifics[strings.ToLower(f)] {
		return f
	}
	return ""
}

func isASCIIString(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// AppendRadiologist appends the assigned radiologist's Practitioner, or
// nothing when there is none.
func (m *Mapped) AppendRadiologist(dst []byte) []byte {
	if m.RadiologistID == "" {
		return dst
	}
	u := m.a.RadiologistUser
	dst = jsonw.String(append(dst, `{"id":`...), m.RadiologistID)
	dst, l := beginList(dst, "extension")
	if u.Initials != "" {
		dst = stringExt(l.next(dst), qExtInitials, u.Initials)
	}
	if u.Role != "" {
		dst = stringExt(l.next(dst), qExtUserRole, u.Role)
	}
	dst = l.end(dst)
	if u.Username != "" {
		dst = rawField(append(jsonw.Field(dst, "identifier"), "[{"...), "system", qSystemUsername)
		dst = append(jsonw.StringField(dst, "value", u.Username), "}]"...)
	}
	if u.FirstName != "" || u.LastName != "" {
		dst = append(jsonw.Field(dst, "name"), "[{"...)
		dst = appendRadiologistText(jsonw.Field(dst, "text"), u)
		dst = appendNameParts(dst, u.FirstName, u.LastName, "")
		dst = append(dst, "}]"...)
	}
	return append(dst, `,"resourceType":"Practitioner"}`...)
}

// AppendClinic appends the referring clinic's Organization, or nothing
// when there is none.
func (m *Mapped) AppendClinic(dst []byte) []byte {
	if m.ClinicID == "" {
		return dst
	}
	dst = jsonw.String(append(dst, `{"id":`...), m.ClinicID)
	dst = jsonw.StringField(dst, "name", m.a.ClinicName)
	return append(dst, `,"resourceType":"Organization"}`...)
}
