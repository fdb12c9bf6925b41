package mapping

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/internal/wallclock"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// Worklist is one QUBS appointment as FHIR: the ServiceRequest and the
// resources it references. Every reference in ServiceRequest points at one
// of the resources here.
type Worklist struct {
	ServiceRequest fhir.ServiceRequest
	// Patient is nil only when QUBS sent no patient data at all; the
	// ServiceRequest's subject then carries a data-absent-reason.
	Patient *fhir.Patient
	// Referrer is the referring doctor, nil when doctorName is empty.
	Referrer *fhir.Practitioner
	// Radiologist is the assigned radiologist, nil when radiologistUser is
	// absent.
	Radiologist *fhir.Practitioner
	// Clinic is the referring clinic, nil when clinicName is empty.
	Clinic *fhir.Organization
}

// FromAppointment maps a pending-reporting appointment; MAPPING.md is the
// table. z gives the scheduled site's zone (nil means DefaultZone for
// every site).
//
// It fails (ErrUnrepresentable) only when the appointment id cannot be a
// FHIR id: empty, or too long to encode. Every other oddity degrades, the
// QUBS value kept in an extension.
func FromAppointment(orig *qubs.Appointment, z *Zones) (*Worklist, error) {
	if orig == nil {
		return nil, errors.New("mapping: nil appointment")
	}
	srID, err := ServiceRequestID(orig.AppointmentID)
	if err != nil {
		return nil, fmt.Errorf("mapping appointment: %w", err)
	}
	// Ids come from the QUBS values as sent; everything shown comes from a
	// copy FHIR can carry, the replaced originals kept in ExtOriginal.
	a, originals := sanitize(orig)
	w := &Worklist{}
	sr := &w.ServiceRequest
	sr.Id = &srID
	sr.Status = requestStatus(a.Status)
	sr.Intent = fhir.RequestIntentOrder
	sr.Identifier = identifiers(a)
	sr.Category = []fhir.CodeableConcept{{
		Coding: []fhir.Coding{{System: ptr(SystemSNOMED), Code: ptr(SNOMEDImagingProcedure), Display: ptr("Imaging procedure")}},
		Text:   ptr("Imaging"),
	}}
	if p, ok := requestPriority(a.Priority); ok {
		sr.Priority = &p
	}
	sr.Code = studyCode(a)
	if a.Modality != "" {
		od := fhir.CodeableConcept{Text: ptr(a.Modality)}
		if d, ok := modalityCoding(a.Modality); ok {
			od.Coding = []fhir.Coding{{System: ptr(SystemDICOM), Code: ptr(d.code), Display: ptr(d.display)}}
		}
		sr.OrderDetail = []fhir.CodeableConcept{od}
	}
	if a.ScheduledSite != "" {
		sr.LocationCode = []fhir.CodeableConcept{{Text: ptr(a.ScheduledSite)}}
	}
	if a.ClinicalInfo != "" {
		sr.ReasonCode = []fhir.CodeableConcept{{Text: ptr(a.ClinicalInfo)}}
	}
	occurrenceExt := occurrence(sr, a, z.For(a.ScheduledSite))

	if w.Patient = patient(a, PatientID(orig)); w.Patient != nil {
		sr.Subject = fhir.Reference{Reference: ptr("Patient/" + *w.Patient.Id), Type: ptr("Patient")}
		if a.PatientName != "" {
			sr.Subject.Display = ptr(a.PatientName)
		}
	} else {
		// subject is 1..1: say why it is empty rather than invent a
		// Patient.
		sr.Subject = fhir.Reference{Extension: []fhir.Extension{{Url: ExtDataAbsentReason, ValueCode: ptr("unknown")}}}
	}
	var clinicRef *fhir.Reference
	if a.ClinicName != "" {
		id := ClinicID(orig)
		w.Clinic = &fhir.Organization{Id: &id, Name: ptr(a.ClinicName)}
		clinicRef = &fhir.Reference{Reference: ptr("Organization/" + id), Type: ptr("Organization"), Display: ptr(a.ClinicName)}
	}
	if a.DoctorName != "" {
		w.Referrer = referrer(a, ReferrerID(orig))
		sr.Requester = &fhir.Reference{Reference: ptr("Practitioner/" + *w.Referrer.Id), Type: ptr("Practitioner"), Display: ptr(a.DoctorName)}
	} else if clinicRef != nil {
		// With no doctor the clinic is the requester; it is in
		// ExtReferringClinic as well, so readers find it in one place.
		r := *clinicRef
		sr.Requester = &r
	}
	if a.RadiologistUser != nil {
		w.Radiologist = radiologist(a, RadiologistID(orig))
		ref := fhir.Reference{Reference: ptr("Practitioner/" + *w.Radiologist.Id), Type: ptr("Practitioner")}
		if len(w.Radiologist.Name) > 0 {
			ref.Display = w.Radiologist.Name[0].Text
		}
		sr.Performer = []fhir.Reference{ref}
	}

	// Extensions, in a fixed order so the output is stable.
	ext := make([]fhir.Extension, 0, 8+len(a.ServiceItems)+len(originals))
	if a.Domain != "" {
		ext = append(ext, fhir.Extension{Url: ExtDomain, ValueString: ptr(a.Domain)})
	}
	if a.Status != "" {
		ext = append(ext, fhir.Extension{Url: ExtStatus, ValueString: ptr(string(a.Status))})
	}
	if a.Priority != "" && (sr.Priority == nil || sr.Priority.Code() != a.Priority) {
		ext = append(ext, fhir.Extension{Url: ExtPriority, ValueString: ptr(a.Priority)})
	}
	if a.ReportNeededBy != nil {
		ext = append(ext, dateTimeExtension(ExtReportNeededBy, *a.ReportNeededBy))
	}
	if clinicRef != nil {
		ext = append(ext, fhir.Extension{Url: ExtReferringClinic, ValueReference: clinicRef})
	}
	ext = append(ext, occurrenceExt...)
	ext = append(ext, originals...)
	if a.ServiceItems != nil {
		ext = append(ext, fhir.Extension{Url: ExtServiceItemCount, ValueUnsignedInt: ptr(len(a.ServiceItems))})
		for _, it := range a.ServiceItems {
			raw := string(it)
			if len(it) == 0 {
				raw = "null" // what the item marshals as
			}
			ext = append(ext, fhir.Extension{Url: ExtServiceItem, ValueString: &raw})
		}
	}
	if len(ext) > 0 {
		sr.Extension = ext
	}
	return w, nil
}

func identifiers(a *qubs.Appointment) []fhir.Identifier {
	ids := []fhir.Identifier{{
		Use: ptr(fhir.IdentifierUseUsual),
		Type: &fhir.CodeableConcept{
			Coding: []fhir.Coding{{System: ptr(SystemV2IdentifierType), Code: ptr("FILL"), Display: ptr("Filler Identifier")}},
		},
		System: ptr(SystemAppointmentID),
		Value:  ptr(a.AppointmentID),
	}}
	if a.StudyInstanceUID != "" {
		// ImagingStudy's convention, so a PACS can match the study.
		ids = append(ids, fhir.Identifier{System: ptr(SystemDICOMUID), Value: ptr("urn:oid:" + a.StudyInstanceUID)})
	}
	return ids
}

// studyCode is ServiceRequest.code: one coding per service item that has
// an item number, and text from studyDescription. code.text is always set
// (worklist UIs show it): without a studyDescription it falls back to the
// modality, then "Imaging study", marked with ExtDerivedText so the
// fallback is not read back as a QUBS description.
func studyCode(a *qubs.Appointment) *fhir.CodeableConcept {
	cc := &fhir.CodeableConcept{}
	for _, it := range a.ServiceItems {
		if c, ok := serviceItemCoding(it); ok {
			cc.Coding = append(cc.Coding, c)
		}
	}
	switch {
	case a.StudyDescription != "":
		cc.Text = ptr(a.StudyDescription)
	default:
		text := "Imaging study"
		if a.Modality != "" {
			text = a.Modality
		}
		cc.Text = &text
		cc.Extension = []fhir.Extension{{Url: ExtDerivedText, ValueBoolean: ptr(true)}}
	}
	return cc
}

// serviceItemCoding reads the well-known keys of a service item: the item
// number in "itemNumber" (string or number) and its "description". QUBS
// documents no fields; these are the keys seen in practice and used by the
// simulator. An item without a usable number gets no coding; its raw JSON
// is kept in ExtServiceItem either way.
func serviceItemCoding(it qubs.ServiceItem) (fhir.Coding, bool) {
	code, display, ok := serviceItemCode(it)
	if !ok {
		return fhir.Coding{}, false
	}
	c := fhir.Coding{System: ptr(SystemServiceItem), Code: &code}
	if display != "" {
		c.Display = &display
	}
	return c, true
}

// scalarString returns a JSON string's value or a JSON number's text, ""
// for anything else.
func scalarString(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// occurrence sets occurrence[x] from appointmentDate, startTime and
// endTime in the site's zone, and returns extensions for whatever could
// not be placed there.
//
//   - no date: no occurrence;
//   - a date alone: occurrenceDateTime, a FHIR date;
//   - a date and a start and/or end time: occurrencePeriod with the
//     instants present, each printed as the QUBS wall clock with the zone's
//     offset for that moment (see wallclock.Offset for daylight saving). An end
//     earlier than the start is taken to be on the next day (an
//     appointment across midnight), as Period requires start <= end.
//
// A malformed date or time, or a time without a date, is kept verbatim in
// ExtAppointmentDate, ExtStartTime or ExtEndTime. An empty string is
// treated as null, which QUBS uses for "none".
func occurrence(sr *fhir.ServiceRequest, a *qubs.Appointment, loc *time.Location) []fhir.Extension {
	var ext []fhir.Extension
	keep := func(url string, v *string) {
		if v != nil && *v != "" {
			ext = append(ext, fhir.Extension{Url: url, ValueString: ptr(*v)})
		}
	}
	date, ok := parseDate(a.AppointmentDate)
	if !ok {
		keep(ExtAppointmentDate, a.AppointmentDate)
		keep(ExtStartTime, a.StartTime)
		keep(ExtEndTime, a.EndTime)
		return ext
	}
	start, okStart := parseClock(a.StartTime)
	end, okEnd := parseClock(a.EndTime)
	if !okStart {
		keep(ExtStartTime, a.StartTime)
	}
	if !okEnd {
		keep(ExtEndTime, a.EndTime)
	}
	if !okStart && !okEnd {
		sr.OccurrenceDateTime = a.AppointmentDate
		return ext
	}
	p := &fhir.Period{}
	if okStart {
		p.Start = ptr(localDateTime(loc, date, start))
	}
	if okEnd {
		endDate := date
		if okStart && end < start {
			endDate = date.AddDate(0, 0, 1)
		}
		p.End = ptr(localDateTime(loc, endDate, end))
	}
	sr.OccurrencePeriod = p
	return ext
}

// parseDate accepts exactly yyyy-MM-dd with a year FHIR can hold
// (0001-9999).
func parseDate(s *string) (time.Time, bool) {
	if s == nil || len(*s) != len(time.DateOnly) {
		return time.Time{}, false
	}
	d, err := time.Parse(time.DateOnly, *s)
	if err != nil || d.Year() < 1 {
		return time.Time{}, false
	}
	return d, true
}

// parseClock accepts exactly HH:mm:ss (the documented pattern
// ^([01]\d|2[0-3]):[0-5]\d:[0-5]\d$) and returns seconds since midnight.
func parseClock(s *string) (int, bool) {
	if s == nil || len(*s) != 8 || (*s)[2] != ':' || (*s)[5] != ':' {
		return 0, false
	}
	h, err1 := strconv.Atoi((*s)[0:2])
	m, err2 := strconv.Atoi((*s)[3:5])
	sec, err3 := strconv.Atoi((*s)[6:8])
	if err1 != nil || err2 != nil || err3 != nil || h > 23 || m > 59 || sec > 59 ||
		strings.ContainsAny(*s, "+- ") {
		return 0, false
	}
	return h*3600 + m*60 + sec, true
}

// localDateTime prints a site-local date and clock as a FHIR dateTime with
// the zone's offset at that moment.
func localDateTime(loc *time.Location, date time.Time, clock int) string {
	y, mo, d := date.Date()
	h, mi, s := clock/3600, clock/60%60, clock%60
	off := wallclock.Offset(loc, y, mo, d, h, mi, s)
	b := make([]byte, 0, 25)
	b = time.Date(y, mo, d, h, mi, s, 0, time.UTC).AppendFormat(b, "2006-01-02T15:04:05")
	return string(formatOffset(b, off))
}

// dateTimeExtension keeps a QUBS date-time (UTC per the documentation) as
// valueDateTime with its own offset and full precision. A year FHIR cannot
// hold falls back to valueString.
func dateTimeExtension(url string, t time.Time) fhir.Extension {
	s := t.Format(time.RFC3339Nano)
	if y := t.Year(); y < 1 || y > 9999 {
		return fhir.Extension{Url: url, ValueString: &s}
	}
	return fhir.Extension{Url: url, ValueDateTime: &s}
}

// patient builds the Patient, nil when the appointment has no patient data.
func patient(a *qubs.Appointment, id string) *fhir.Patient {
	if a.PatientID == "" && a.PatientName == "" && a.FirstName == "" && a.LastName == "" &&
		a.DateOfBirth == nil && a.Gender == "" {
		return nil
	}
	p := &fhir.Patient{Id: &id}
	if a.PatientID != "" {
		p.Identifier = []fhir.Identifier{{
			Use: ptr(fhir.IdentifierUseUsual),
			Type: &fhir.CodeableConcept{
				Coding: []fhir.Coding{{System: ptr(SystemV2IdentifierType), Code: ptr("MR"), Display: ptr("Medical record number")}},
			},
			System: ptr(SystemPatientID),
			Value:  ptr(a.PatientID),
		}}
	}
	// The parts are kept exactly: a first name with a space is one given
	// name, as QUBS holds it, not split into two.
	if n, ok := humanName(a.PatientName, a.FirstName, a.LastName); ok {
		p.Name = []fhir.HumanName{n}
	}
	if _, ok := parseDate(a.DateOfBirth); ok {
		p.BirthDate = a.DateOfBirth
	} else if a.DateOfBirth != nil && *a.DateOfBirth != "" {
		p.Extension = append(p.Extension, fhir.Extension{Url: ExtDateOfBirth, ValueString: ptr(*a.DateOfBirth)})
	}
	// An empty gender leaves Patient.gender out rather than claim
	// "unknown": QUBS recorded nothing, and "unknown" is a value QUBS can
	// send itself.
	if a.Gender != "" {
		g := administrativeGender(a.Gender)
		p.Gender = &g
		if g.Code() != a.Gender {
			p.Extension = append(p.Extension, fhir.Extension{Url: ExtGender, ValueString: ptr(a.Gender)})
		}
	}
	return p
}

func humanName(text, given, family string) (fhir.HumanName, bool) {
	var n fhir.HumanName
	if text != "" {
		n.Text = ptr(text)
	}
	if family != "" {
		n.Family = ptr(family)
	}
	if given != "" {
		n.Given = []string{given}
	}
	return n, text != "" || given != "" || family != ""
}

// honorifics are the leading titles put in HumanName.prefix; the name is
// not parsed further (which part of "Dr Anh Trần" is the family name is a
// guess), and name.text keeps doctorName exactly.
var honorifics = map[string]bool{"dr": true, "dr.": true, "prof": true, "prof.": true, "a/prof": true, "professor": true}

func referrer(a *qubs.Appointment, id string) *fhir.Practitioner {
	n := fhir.HumanName{Text: ptr(a.DoctorName)}
	if f := strings.Fields(a.DoctorName); len(f) > 1 && honorifics[strings.ToLower(f[0])] {
		n.Prefix = []string{f[0]}
	}
	return &fhir.Practitioner{Id: &id, Name: []fhir.HumanName{n}}
}

func radiologist(a *qubs.Appointment, id string) *fhir.Practitioner {
	u := a.RadiologistUser
	p := &fhir.Practitioner{Id: &id}
	if u.Username != "" {
		p.Identifier = []fhir.Identifier{{System: ptr(SystemUsername), Value: ptr(u.Username)}}
	}
	text := u.FirstName + u.LastName
	if u.FirstName != "" && u.LastName != "" {
		text = u.FirstName + " " + u.LastName
	}
	if n, ok := humanName(text, u.FirstName, u.LastName); ok {
		p.Name = []fhir.HumanName{n}
	}
	if u.Initials != "" {
		p.Extension = append(p.Extension, fhir.Extension{Url: ExtInitials, ValueString: ptr(u.Initials)})
	}
	if u.Role != "" {
		p.Extension = append(p.Extension, fhir.Extension{Url: ExtUserRole, ValueString: ptr(u.Role)})
	}
	return p
}

func ptr[T any](v T) *T { return &v }
