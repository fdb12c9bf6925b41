package mapping

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// resources is how a Worklist is written to a golden file: one JSON object
// keyed by role, absent resources left out.
type resources struct {
	ServiceRequest fhir.ServiceRequest `json:"ServiceRequest"`
	Patient        *fhir.Patient       `json:"Patient,omitempty"`
	Referrer       *fhir.Practitioner  `json:"Referrer,omitempty"`
	Radiologist    *fhir.Practitioner  `json:"Radiologist,omitempty"`
	Clinic         *fhir.Organization  `json:"Clinic,omitempty"`
}

func resourcesOf(w *Worklist) resources {
	return resources{w.ServiceRequest, w.Patient, w.Referrer, w.Radiologist, w.Clinic}
}

// requireValid checks every resource of r with the strict R4 validator.
func requireValid(t testing.TB, r resources) {
	t.Helper()
	for _, v := range []any{r.ServiceRequest, r.Patient, r.Referrer, r.Radiologist, r.Clinic} {
		switch p := v.(type) {
		case *fhir.Patient:
			if p == nil {
				continue
			}
		case *fhir.Practitioner:
			if p == nil {
				continue
			}
		case *fhir.Organization:
			if p == nil {
				continue
			}
		}
		b, err := json.Marshal(v)
		require.NoError(t, err)
		fhirtest.RequireValidR4(t, b)
	}
}

// extensions indexes extensions by url.
func extensions(exts []fhir.Extension) map[string][]fhir.Extension {
	m := map[string][]fhir.Extension{}
	for _, e := range exts {
		m[e.Url] = append(m[e.Url], e)
	}
	return m
}

func extString(t testing.TB, m map[string][]fhir.Extension, url string) (string, bool) {
	t.Helper()
	es := m[url]
	if len(es) == 0 {
		return "", false
	}
	require.Len(t, es, 1, "extension %s repeats", url)
	require.NotNil(t, es[0].ValueString, "extension %s has no valueString", url)
	return *es[0].ValueString, true
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// recoverAppointment is the test-only inverse of FromAppointment: it reads
// every QUBS field back from the resources alone, checking on the way that
// references point at the resources given and that every site-local
// dateTime carries the zone's offset for its instant.
func recoverAppointment(t testing.TB, r resources, z *Zones) qubs.Appointment {
	t.Helper()
	var a qubs.Appointment
	sr := r.ServiceRequest
	ext := extensions(sr.Extension)

	a.Domain, _ = extString(t, ext, ExtDomain)
	st, _ := extString(t, ext, ExtStatus)
	a.Status = qubs.Status(st)
	assert.Equal(t, requestStatus(a.Status), sr.Status, "status follows the QUBS status")
	assert.Equal(t, fhir.RequestIntentOrder, sr.Intent)

	for _, id := range sr.Identifier {
		switch deref(id.System) {
		case SystemAppointmentID:
			a.AppointmentID = deref(id.Value)
		case SystemDICOMUID:
			v, ok := strings.CutPrefix(deref(id.Value), "urn:oid:")
			require.True(t, ok, "study instance UID without urn:oid:")
			a.StudyInstanceUID = v
		default:
			t.Fatalf("unexpected identifier system %q", deref(id.System))
		}
	}
	require.NotNil(t, sr.Id)
	if !fhirSafe(a.AppointmentID) {
		t.Fatal("sanitised appointment id in the identifier")
	}

	if len(sr.LocationCode) > 0 {
		require.Len(t, sr.LocationCode, 1)
		a.ScheduledSite = deref(sr.LocationCode[0].Text)
	}
	loc := z.For(a.ScheduledSite)

	// Occurrence: the literal wall clock is the QUBS value.
	a.AppointmentDate, a.StartTime, a.EndTime = recoverOccurrence(t, sr, loc)
	if v, ok := extString(t, ext, ExtAppointmentDate); ok {
		require.Nil(t, a.AppointmentDate, "date both in occurrence and in its extension")
		a.AppointmentDate = &v
	}
	if v, ok := extString(t, ext, ExtStartTime); ok {
		require.Nil(t, a.StartTime, "start both in occurrence and in its extension")
		a.StartTime = &v
	}
	if v, ok := extString(t, ext, ExtEndTime); ok {
		require.Nil(t, a.EndTime, "end both in occurrence and in its extension")
		a.EndTime = &v
	}

	// Patient.
	if r.Patient == nil {
		require.Nil(t, sr.Subject.Reference)
		require.Len(t, sr.Subject.Extension, 1)
		assert.Equal(t, ExtDataAbsentReason, sr.Subject.Extension[0].Url)
	} else {
		p := r.Patient
		require.NotNil(t, p.Id)
		assert.Equal(t, "Patient/"+*p.Id, deref(sr.Subject.Reference))
		for _, id := range p.Identifier {
			require.Equal(t, SystemPatientID, deref(id.System))
			a.PatientID = deref(id.Value)
		}
		if len(p.Name) > 0 {
			require.Len(t, p.Name, 1)
			a.PatientName = deref(p.Name[0].Text)
			a.LastName = deref(p.Name[0].Family)
			if len(p.Name[0].Given) > 0 {
				require.Len(t, p.Name[0].Given, 1)
				a.FirstName = p.Name[0].Given[0]
			}
		}
		a.DateOfBirth = p.BirthDate
		pext := extensions(p.Extension)
		if v, ok := extString(t, pext, ExtDateOfBirth); ok {
			require.Nil(t, a.DateOfBirth)
			a.DateOfBirth = &v
		}
		if v, ok := extString(t, pext, ExtGender); ok {
			require.NotNil(t, p.Gender)
			a.Gender = v
		} else if p.Gender != nil {
			a.Gender = p.Gender.Code()
		}
	}

	// What was asked for.
	if len(sr.OrderDetail) > 0 {
		require.Len(t, sr.OrderDetail, 1)
		a.Modality = deref(sr.OrderDetail[0].Text)
	}
	require.NotNil(t, sr.Code)
	require.NotNil(t, sr.Code.Text, "code.text must always be set")
	if len(sr.Code.Extension) == 0 {
		a.StudyDescription = *sr.Code.Text
	} else {
		assert.Equal(t, ExtDerivedText, sr.Code.Extension[0].Url)
	}
	if len(sr.ReasonCode) > 0 {
		require.Len(t, sr.ReasonCode, 1)
		a.ClinicalInfo = deref(sr.ReasonCode[0].Text)
	}
	if v, ok := extString(t, ext, ExtPriority); ok {
		a.Priority = v
	} else if sr.Priority != nil {
		a.Priority = sr.Priority.Code()
	}
	if es := ext[ExtReportNeededBy]; len(es) > 0 {
		require.Len(t, es, 1)
		s := deref(es[0].ValueDateTime)
		if s == "" {
			s = deref(es[0].ValueString)
		}
		tm, err := time.Parse(time.RFC3339Nano, s)
		require.NoError(t, err)
		a.ReportNeededBy = &tm
	}

	// Who.
	if r.Referrer != nil {
		require.Len(t, r.Referrer.Name, 1)
		a.DoctorName = deref(r.Referrer.Name[0].Text)
		require.NotNil(t, sr.Requester)
		assert.Equal(t, "Practitioner/"+*r.Referrer.Id, deref(sr.Requester.Reference))
	}
	if r.Clinic != nil {
		a.ClinicName = deref(r.Clinic.Name)
		es := ext[ExtReferringClinic]
		require.Len(t, es, 1)
		assert.Equal(t, "Organization/"+*r.Clinic.Id, deref(es[0].ValueReference.Reference))
		if r.Referrer == nil {
			assert.Equal(t, "Organization/"+*r.Clinic.Id, deref(sr.Requester.Reference))
		}
	} else {
		assert.Empty(t, ext[ExtReferringClinic])
	}
	if r.Referrer == nil && r.Clinic == nil {
		assert.Nil(t, sr.Requester)
	}
	if p := r.Radiologist; p != nil {
		u := &qubs.UserSummary{}
		for _, id := range p.Identifier {
			require.Equal(t, SystemUsername, deref(id.System))
			u.Username = deref(id.Value)
		}
		if len(p.Name) > 0 {
			u.LastName = deref(p.Name[0].Family)
			if len(p.Name[0].Given) > 0 {
				u.FirstName = p.Name[0].Given[0]
			}
		}
		pext := extensions(p.Extension)
		u.Initials, _ = extString(t, pext, ExtInitials)
		u.Role, _ = extString(t, pext, ExtUserRole)
		a.RadiologistUser = u
		require.Len(t, sr.Performer, 1)
		assert.Equal(t, "Practitioner/"+*p.Id, deref(sr.Performer[0].Reference))
	} else {
		assert.Empty(t, sr.Performer)
	}

	// Service items, raw and in order.
	if es := ext[ExtServiceItemCount]; len(es) > 0 {
		require.Len(t, es, 1)
		n := *es[0].ValueUnsignedInt
		items := ext[ExtServiceItem]
		require.Len(t, items, n)
		a.ServiceItems = make([]qubs.ServiceItem, 0, n)
		for _, it := range items {
			a.ServiceItems = append(a.ServiceItems, qubs.ServiceItem(*it.ValueString))
		}
	} else {
		assert.Empty(t, ext[ExtServiceItem])
	}

	// Strings FHIR could not carry as they were.
	for _, e := range ext[ExtOriginal] {
		sub := extensions(e.Extension)
		field, _ := extString(t, sub, "field")
		require.Len(t, sub["value"], 1)
		b, err := base64.StdEncoding.DecodeString(deref(sub["value"][0].ValueBase64Binary))
		require.NoError(t, err)
		setField(t, &a, field, string(b))
	}
	return a
}

// setField sets a QUBS field by its JSON name, as ExtOriginal names it.
func setField(t testing.TB, a *qubs.Appointment, field, v string) {
	t.Helper()
	if rest, ok := strings.CutPrefix(field, "serviceItems["); ok {
		i, err := strconv.Atoi(strings.TrimSuffix(rest, "]"))
		require.NoError(t, err)
		a.ServiceItems[i] = qubs.ServiceItem(v)
		return
	}
	if rest, ok := strings.CutPrefix(field, "radiologistUser."); ok {
		u := a.RadiologistUser
		m := map[string]*string{"username": &u.Username, "firstName": &u.FirstName, "initials": &u.Initials, "lastName": &u.LastName, "role": &u.Role}
		require.Contains(t, m, rest)
		*m[rest] = v
		return
	}
	status := string(a.Status)
	strs := map[string]*string{
		"domain": &a.Domain, "appointmentId": &a.AppointmentID, "status": &status, "scheduledSite": &a.ScheduledSite,
		"patientId": &a.PatientID, "patientName": &a.PatientName, "firstName": &a.FirstName, "lastName": &a.LastName,
		"gender": &a.Gender, "modality": &a.Modality, "studyDescription": &a.StudyDescription, "clinicalInfo": &a.ClinicalInfo,
		"doctorName": &a.DoctorName, "clinicName": &a.ClinicName, "priority": &a.Priority, "studyInstanceUid": &a.StudyInstanceUID,
	}
	ptrs := map[string]**string{"appointmentDate": &a.AppointmentDate, "startTime": &a.StartTime, "endTime": &a.EndTime, "dateOfBirth": &a.DateOfBirth}
	switch {
	case strs[field] != nil:
		*strs[field] = v
		a.Status = qubs.Status(status)
	case ptrs[field] != nil:
		require.NotNil(t, *ptrs[field], "original of an absent %s", field)
		*ptrs[field] = &v
	default:
		t.Fatalf("ExtOriginal names unknown field %q", field)
	}
}

// recoverOccurrence reads appointmentDate, startTime and endTime from
// occurrence[x] as the literal wall clock, and checks each dateTime's
// offset against the zone (the wall clock and the offset name an instant
// whose local time in the zone is that wall clock, except in a daylight
// saving gap, where the offset is the one before the gap).
func recoverOccurrence(t testing.TB, sr fhir.ServiceRequest, loc *time.Location) (date, start, end *string) {
	t.Helper()
	if sr.OccurrenceDateTime != nil {
		require.Nil(t, sr.OccurrencePeriod)
		d := *sr.OccurrenceDateTime
		require.Len(t, d, len(time.DateOnly), "a date-only occurrence")
		return &d, nil, nil
	}
	p := sr.OccurrencePeriod
	if p == nil {
		return nil, nil, nil
	}
	split := func(s string) (string, string) {
		requireLocalOffset(t, s, loc)
		return s[:10], s[11:19]
	}
	if p.Start != nil {
		d, c := split(*p.Start)
		date, start = &d, &c
	}
	if p.End != nil {
		d, c := split(*p.End)
		end = &c
		if date == nil {
			date = &d
		}
	}
	require.NotNil(t, date, "an empty occurrencePeriod")
	return date, start, end
}

// requireLocalOffset checks that a site-local dateTime's offset is the
// zone's at its instant, or, in a gap, the offset before the gap.
func requireLocalOffset(t testing.TB, s string, loc *time.Location) {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	require.NoError(t, err, "dateTime %q", s)
	_, off := tm.Zone()
	_, zoneOff := tm.In(loc).Zone()
	if off == zoneOff/60*60 {
		return
	}
	// A gap: the wall clock does not exist in the zone, and the offset is
	// the one just before the transition.
	wall := s[:19]
	for _, o := range []int{off - 2*3600, off - 3600, off - 1800, off + 1800, off + 3600, off + 2*3600} {
		cand := tm.Add(time.Duration(off-o) * time.Second).In(loc)
		require.NotEqual(t, wall, cand.Format("2006-01-02T15:04:05"), "%s: a wall clock that exists in %s with another offset", s, loc)
	}
	_, before := tm.Add(-2 * time.Hour).In(loc).Zone()
	assert.Equal(t, before, off, "%s: in a gap the offset is the one before it", s)
}
