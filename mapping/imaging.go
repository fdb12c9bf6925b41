package mapping

import (
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/internal/jsonw"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/internal/wallclock"
)

// ImagingStudy and Task are further views of the same pending-reporting
// appointment as the ServiceRequest, written straight from the appointment
// like it (see Mapped). Both take the ServiceRequest's id: there is one of
// each per appointment, so the id names the study in all three, and a
// client that holds one can read the others without a search.

// ExtModality keeps QUBS's modality text on an ImagingStudy when it is not
// exactly a DCM code: ImagingStudy.modality is a Coding, with no text.
const ExtModality = Base + "StructureDefinition/qubs-modality"

// Task codes (R4 task-status, task-code).
const (
	TaskRequested  = "requested"
	TaskInProgress = "in-progress"
	TaskCompleted  = "completed"

	SystemTaskCode = "http://hl7.org/fhir/CodeSystem/task-code"
)

var (
	qExtModality    = quote(ExtModality)
	qSystemTaskCode = quote(SystemTaskCode)
)

// ImagingStudy statuses (R4 imagingstudy-status) the bridge uses: a study
// with a Study Instance UID has images in the PACS; one without is known
// only as an appointment.
const (
	ImagingStudyAvailable  = "available"
	ImagingStudyRegistered = "registered"
)

// ImagingStudyStatus is the study's ImagingStudy.status.
func (m *Mapped) ImagingStudyStatus() string {
	if m.a.StudyInstanceUID != "" {
		return ImagingStudyAvailable
	}
	return ImagingStudyRegistered
}

// AppointmentID is the QUBS appointment id, as QUBS sent it.
func (m *Mapped) AppointmentID() string { return m.apptID }

// Zone is the time zone of the appointment's site, which its local dates
// and times were read in.
func (m *Mapped) Zone() *time.Location { return m.loc }

// StudyInstanceUID is the study's DICOM Study Instance UID, "" when QUBS
// sent none.
func (m *Mapped) StudyInstanceUID() string { return m.a.StudyInstanceUID }

// Modality is the DCM code of the study's modality; ok is false when QUBS
// sent none or one that maps to no DCM code.
func (m *Mapped) Modality() (code string, ok bool) {
	d, ok := modalityCoding(m.a.Modality)
	return d.code, ok
}

// Priority is ServiceRequest.priority (and Task.priority); ok is false
// when it is left out (see MAPPING.md).
func (m *Mapped) Priority() (code string, ok bool) {
	p, ok := requestPriority(m.a.Priority)
	if !ok {
		return "", false
	}
	return p.Code(), true
}

// Started is ImagingStudy.started for date searches, as the range of time
// it stands for, end exclusive: the scheduled start's second in the site's
// zone (started is written to the second, and a dateTime stands for its
// whole second, as an occurrence does), or, when the appointment has a date and no usable start time, the whole
// of that day in the site's zone, [00:00, next day's 00:00): a date
// without a time is a whole site-local day, as FHIR's date search treats
// a value of day precision. ok is false when QUBS gave no usable date.
func (m *Mapped) Started() (from, to time.Time, ok bool) {
	occ := occurrenceOf(m.a)
	if occ.start {
		y, mo, d := occ.date.Date()
		c := occ.startClock
		t := wallclock.Time(m.loc, y, mo, d, c/3600, c/60%60, c%60, 0)
		return t, t.Add(time.Second), true
	}
	d, ok := parseDate(m.a.AppointmentDate)
	if !ok {
		return time.Time{}, time.Time{}, false
	}
	y, mo, day := d.Date()
	// Midnight resolved as any local time is: where clocks change at
	// midnight, the day begins at the first instant it has.
	return wallclock.Time(m.loc, y, mo, day, 0, 0, 0, 0), wallclock.Time(m.loc, y, mo, day+1, 0, 0, 0, 0), true
}

// appendStarted appends "started" (occurrencePeriod.start, else the date
// alone, also when QUBS gave an end time and no start), nothing when
// neither is known.
func (m *Mapped) appendStarted(dst []byte) []byte {
	occ := occurrenceOf(m.a)
	switch {
	case occ.start:
		return appendLocalDateTime(jsonw.Field(dst, "started"), m.loc, occ.date, occ.startClock)
	case occ.dateTime, occ.end:
		return jsonw.StringField(dst, "started", *m.a.AppointmentDate)
	}
	return dst
}

// appendIdentifiers appends the appointment id (type FILL) and, when
// known, the Study Instance UID, as ServiceRequest.identifier has them.
func (m *Mapped) appendIdentifiers(dst []byte) []byte {
	a := m.a
	dst = jsonw.Field(dst, "identifier")
	dst = append(dst, `[{"use":"usual","type":{"coding":[{`...)
	dst = rawField(dst, "system", qSystemV2IdentifierType)
	dst = append(dst, `,"code":"FILL","display":"Filler Identifier"}]}`...)
	dst = rawField(dst, "system", qSystemAppointmentID)
	dst = append(jsonw.StringField(dst, "value", a.AppointmentID), '}')
	if a.StudyInstanceUID != "" {
		dst = rawField(append(dst, ",{"...), "system", qSystemDICOMUID)
		dst = append(jsonw.Field(dst, "value"), `"urn:oid:`...)
		dst = append(jsonw.Escaped(dst, a.StudyInstanceUID), `"}`...)
	}
	return append(dst, ']')
}

// appendSubject appends the subject reference: the Patient, or a
// data-absent-reason when the appointment has no patient data (subject is
// 1..1 on ServiceRequest and ImagingStudy).
func (m *Mapped) appendSubject(dst []byte, name string) []byte {
	dst = append(jsonw.Field(dst, name), '{')
	if m.PatientID != "" {
		dst = appendRef(dst, "Patient", m.PatientID)
		if m.a.PatientName != "" {
			dst = jsonw.StringField(dst, "display", m.a.PatientName)
		}
	} else {
		dst = jsonw.Field(dst, "extension")
		dst = rawField(append(dst, "[{"...), "url", qExtDataAbsentReason)
		dst = append(dst, `,"valueCode":"unknown"}]`...)
	}
	return append(dst, '}')
}

// appendRadiologistRef appends a reference to the assigned radiologist
// (the caller checks there is one).
func (m *Mapped) appendRadiologistRef(dst []byte) []byte {
	dst = appendRef(append(dst, '{'), "Practitioner", m.RadiologistID)
	if u := m.a.RadiologistUser; u.FirstName != "" || u.LastName != "" {
		dst = appendRadiologistText(jsonw.Field(dst, "display"), u)
	}
	return append(dst, '}')
}

// appendFocus appends a reference to the ServiceRequest.
func (m *Mapped) appendFocus(dst []byte) []byte {
	return append(appendRef(append(dst, '{'), "ServiceRequest", m.ID), '}')
}

// AppendImagingStudy appends the study as an R4 ImagingStudy (compact
// JSON); MAPPING.md has the table.
func (m *Mapped) AppendImagingStudy(dst []byte) []byte {
	a := m.a
	dst = jsonw.String(append(dst, `{"id":`...), m.ID)
	mod, modOK := modalityCoding(a.Modality)
	if a.Modality != "" && (!modOK || mod.code != a.Modality) {
		// The Coding has no text: the QUBS spelling is kept beside it.
		dst = append(jsonw.Field(dst, "extension"), '[')
		dst = append(stringExt(dst, qExtModality, a.Modality), ']')
	}
	dst = m.appendIdentifiers(dst)
	dst = jsonw.StringField(dst, "status", m.ImagingStudyStatus())
	if modOK {
		dst = rawField(append(jsonw.Field(dst, "modality"), "[{"...), "system", qSystemDICOM)
		dst = jsonw.StringField(dst, "code", mod.code)
		dst = append(jsonw.StringField(dst, "display", mod.display), "}]"...)
	}
	dst = m.appendSubject(dst, "subject")
	dst = m.appendStarted(dst)
	dst = append(m.appendFocus(append(jsonw.Field(dst, "basedOn"), '[')), ']')
	if m.ReferrerID != "" {
		// ImagingStudy.referrer takes a Practitioner only: a clinic
		// without a doctor is on the ServiceRequest, not here.
		dst = appendRef(append(jsonw.Field(dst, "referrer"), '{'), "Practitioner", m.ReferrerID)
		dst = append(jsonw.StringField(dst, "display", a.DoctorName), '}')
	}
	if m.RadiologistID != "" {
		dst = append(m.appendRadiologistRef(append(jsonw.Field(dst, "interpreter"), '[')), ']')
	}
	if a.ScheduledSite != "" {
		// QUBS names the site only; there is no Location to point at.
		dst = append(jsonw.StringField(append(jsonw.Field(dst, "location"), '{'), "display", a.ScheduledSite), '}')
	}
	if a.StudyDescription != "" {
		dst = jsonw.StringField(dst, "description", a.StudyDescription)
	}
	return append(dst, `,"resourceType":"ImagingStudy"}`...)
}

// DeliveredReport is one report version QUBS accepted for the study, as
// the bridge's store knows it.
type DeliveredReport struct {
	// Status is the FHIR DiagnosticReport.status the client sent.
	Status string
	// DeliveredAt is when QUBS accepted it.
	DeliveredAt time.Time
}

// TaskState is the part of a Task that comes from the bridge's store, not
// from QUBS: its status and when that last changed.
type TaskState struct {
	// Status is TaskRequested, TaskInProgress or TaskCompleted.
	Status string
	// LastUpdated is when the delivery that set Status was accepted by
	// QUBS; zero for a requested Task (QUBS says nothing of when a study
	// arrived on the worklist).
	LastUpdated time.Time
}

// TaskStateOf derives a Task's status from the report versions QUBS
// accepted for the study: requested with none, in-progress when the most
// recently delivered one is preliminary, completed when it is final.
// QUBS keeps one report per appointment, the last one submitted, so the
// latest delivery is what QUBS holds, whatever came before.
func TaskStateOf(delivered []DeliveredReport) TaskState {
	var latest *DeliveredReport
	for i := range delivered {
		if latest == nil || delivered[i].DeliveredAt.After(latest.DeliveredAt) {
			latest = &delivered[i]
		}
	}
	if latest == nil {
		return TaskState{Status: TaskRequested}
	}
	st := TaskState{Status: TaskCompleted, LastUpdated: latest.DeliveredAt}
	if latest.Status == "preliminary" || latest.Status == "partial" {
		// The statuses QUBS receives as preliminary (see ReportFromFHIR).
		st.Status = TaskInProgress
	}
	return st
}

// AppendTask appends the study's reporting Task (compact JSON) with the
// status st; MAPPING.md has the table.
func (m *Mapped) AppendTask(dst []byte, st TaskState) []byte {
	a := m.a
	dst = jsonw.String(append(dst, `{"id":`...), m.ID)
	lastUpdated := ""
	if !st.LastUpdated.IsZero() && st.LastUpdated.Year() <= 9999 {
		lastUpdated = st.LastUpdated.UTC().Format(time.RFC3339Nano)
		dst = append(jsonw.StringField(append(jsonw.Field(dst, "meta"), '{'), "lastUpdated", lastUpdated), '}')
	}
	status := st.Status
	if status == "" {
		status = TaskRequested
	}
	dst = jsonw.StringField(dst, "status", status)
	dst = append(dst, `,"intent":"order"`...)
	if p, ok := requestPriority(a.Priority); ok {
		dst = jsonw.StringField(dst, "priority", p.Code())
	}
	dst = rawField(append(jsonw.Field(dst, "code"), `{"coding":[{`...), "system", qSystemTaskCode)
	dst = append(dst, `,"code":"fulfill","display":"Fulfill the focal request"}],"text":"Report the study"}`...)
	dst = m.appendFocus(jsonw.Field(dst, "focus"))
	if m.PatientID != "" {
		dst = appendRef(append(jsonw.Field(dst, "for"), '{'), "Patient", m.PatientID)
		if a.PatientName != "" {
			dst = jsonw.StringField(dst, "display", a.PatientName)
		}
		dst = append(dst, '}')
	}
	if lastUpdated != "" {
		dst = jsonw.StringField(dst, "lastModified", lastUpdated)
	}
	if m.RadiologistID != "" {
		dst = m.appendRadiologistRef(jsonw.Field(dst, "owner"))
	}
	if t := a.ReportNeededBy; t != nil && t.Year() >= 1 && t.Year() <= 9999 {
		dst = append(jsonw.Field(dst, "restriction"), `{"period":{"end":"`...)
		dst = append(t.AppendFormat(dst, time.RFC3339Nano), `"}}`...)
	}
	return append(dst, `,"resourceType":"Task"}`...)
}

// ReportNeededBy is the study's report-needed-by deadline, nil when QUBS
// gave none.
func (m *Mapped) ReportNeededBy() *time.Time { return m.a.ReportNeededBy }
