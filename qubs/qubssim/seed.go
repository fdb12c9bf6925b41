package qubssim

import (
	"encoding/json"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"strconv"
	"time"
	_ "time/tzdata" // site time zones must resolve in minimal containers too

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// The seeded data: deterministic for a Seed, generated in a few
// milliseconds, realistic for Australian radiology, and full of the cases a
// client gets wrong (see the showcase appointments).

type siteDef struct{ name, tz string }

// domainSites are the sites of each seeded domain. The time zones matter:
// Queensland, Western Australia and the Northern Territory have no daylight
// saving, South Australia and the Northern Territory are offset by half an
// hour, and Tweed Heads (NSW, DST) sits across the street from Queensland.
var domainSites = map[string][]siteDef{
	"acme": {
		{"Central Clinic", "Australia/Sydney"},
		{"Perth Imaging", "Australia/Perth"},
		{"Brisbane Radiology", "Australia/Brisbane"},
		{"Adelaide Diagnostic Imaging", "Australia/Adelaide"},
		{"Darwin Radiology", "Australia/Darwin"},
	},
	"northside": {
		{"Northside Chatswood", "Australia/Sydney"},
		{"Northside Hornsby", "Australia/Sydney"},
		{"Hobart Imaging", "Australia/Hobart"},
	},
	"coastal": {
		{"Coastal Gold Coast", "Australia/Brisbane"},
		{"Coastal Tweed Heads", "Australia/Sydney"},
		{"Coastal Geelong", "Australia/Melbourne"},
	},
}

var seededDomains = []string{"acme", "northside", "coastal"}

type exam struct {
	mod, desc, item, itemDesc string
	fee                       float64
	mins                      int
}

// exams carry Medicare Benefits Schedule item numbers; QUBS documents no
// service item fields, so the simulator's are itemNumber, description and
// fee (AUD), sometimes with extra keys a client must keep.
var exams = []exam{
	{"CT", "CT Brain", "56001", "CT brain without contrast", 195.05, 15},
	{"CT", "CT Chest", "56301", "CT chest", 380.5, 15},
	{"CT", "CT Abdomen and Pelvis", "56507", "CT abdomen and pelvis with contrast", 480, 20},
	{"CT", "CT Pulmonary Angiogram", "57350", "CT pulmonary angiography", 520.1, 20},
	{"CT", "CT Lumbar Spine", "56223", "CT lumbar spine", 290, 15},
	{"MR", "MRI Brain", "63001", "MRI head", 403.2, 45},
	{"MR", "MRI Knee", "63560", "MRI knee", 358.8, 30},
	{"MR", "MRI Lumbar Spine", "63176", "MRI lumbar spine", 448, 40},
	{"US", "US Abdomen", "55036", "Ultrasound upper abdomen", 111.75, 30},
	{"US", "US Pelvis", "55065", "Ultrasound pelvis", 100.25, 30},
	{"US", "US Thyroid", "55032", "Ultrasound neck", 109.1, 20},
	{"US", "Obstetric US 12 weeks", "55704", "Obstetric ultrasound 12 to 16 weeks", 70.2, 30},
	{"CR", "XR Chest", "58503", "Radiography chest", 47.15, 10},
	{"CR", "XR Knee", "57524", "Radiography knee", 42.5, 10},
	{"DX", "XR Wrist", "57512", "Radiography wrist", 40.65, 10},
	{"DX", "XR Lumbar Spine", "58112", "Radiography lumbar spine", 78.5, 15},
	{"NM", "NM Whole Body Bone Scan", "61421", "Bone scan whole body", 450, 60},
	{"NM", "NM Lung Ventilation Perfusion", "61328", "Lung ventilation and perfusion study", 480, 45},
	{"MG", "Mammogram Bilateral", "59300", "Mammography both breasts", 98.95, 20},
}

var (
	firstNames = []string{"Jane", "Liam", "Olivia", "Noah", "Charlotte", "Jack", "Zoë", "José", "Mia", "Aroha",
		"Priya", "Wei", "Mohammed", "Siobhan", "Þór", "Chloé", "Lachlan", "Matilda", "Hamish", "Ngaio",
		"Seán", "Björn", "François", "Amelia", "Oliver", "Isla", "Harper", "Ethan", "Yuki", "Anh"}
	lastNames = []string{"Doe", "Smith", "O'Brien", "D'Souza", "Nguyễn", "Papadopoulos", "Kowalski", "Singh",
		"Chen", "Williams", "Brown", "Wilson", "Taylor", "Murphy", "MacDonald", "Ngata", "Guðmundsson",
		"Müller", "Tran", "van der Berg", "Smith-Jones", "Lê", "Kaur", "Okafor", "Rossi", "O'Neill", "McKenzie", "Ahmed"}
	doctors = []string{"Dr Aroha Ngata", "Dr Priya Raman", "Dr Liam O'Connor", "Dr Mei Chen", "Dr Tomás García",
		"Dr Sarah Williams", "Dr Kwame Mensah", "Dr Anh Trần", "Dr Smith"}
	clinics = []string{"Bondi Junction Medical Centre", "Subiaco Family Practice", "Fortitude Valley GP",
		"Glenelg Medical Clinic", "Parramatta Family Doctors", "Royal North Shore Emergency", "St Vincent's Emergency",
		"Example Clinic"}
	clinicalInfos = []string{"Shortness of breath", "?PE, raised D-dimer", "Fall, ?fracture right wrist",
		"Follow-up of 6 mm pulmonary nodule", "Chronic low back pain, ?disc prolapse", "Headache, worst ever, ?SAH",
		"RUQ pain, ?gallstones", "Screening", "Post-op review", "Palpable lump left breast", "Dating scan",
		"Staging, known colorectal carcinoma", "Knee pain after twisting injury — ?ACL tear", "Thyroid nodule on examination"}
	radiologists = []qubs.UserSummary{
		{Username: "rsmith", FirstName: "Rory", Initials: "RS", LastName: "Smith", Role: "Radiologist"},
		{Username: "mokafor", FirstName: "Mary", Initials: "MO", LastName: "Okafor", Role: "Radiologist"},
		{Username: "jlee", FirstName: "Jun", Initials: "JL", LastName: "Lee", Role: "Radiologist"},
		{Username: "aobrien", FirstName: "Aoife", Initials: "AO", LastName: "O'Brien", Role: "Radiologist"},
	}
	staff = []qubs.UserSummary{
		{Username: "mbrown", FirstName: "Maya", Initials: "MB", LastName: "Brown", Role: "Reception"},
		{Username: "jchen", FirstName: "Jesse", Initials: "JC", LastName: "Chen", Role: "Scheduler"},
		{Username: "tnguyen", FirstName: "Thi", Initials: "TN", LastName: "Nguyễn", Role: "Radiographer"},
		{Username: "kpatel", FirstName: "Kiran", Initials: "KP", LastName: "Patel", Role: "Nurse"},
	}
	apptComments  = []string{"Patient requires wheelchair access.", "Interpreter required (Vietnamese — Tiếng Việt).", "Prior imaging at another practice requested.", "Patient fasted from 06:00.", "Please compare with prior study.", "Claustrophobic; oral sedation given."}
	apptAlerts    = []string{"Contrast allergy — premedicated.", "eGFR 38: reduced contrast dose.", "Possible pregnancy — confirm before exposure.", "Critical result expected: phone the referrer."}
	patComments   = []string{"Prefers morning appointments.", "Hearing impaired; use written instructions.", "Guardian must be present."}
	patAlerts     = []string{"Latex allergy.", "Pacemaker — MR conditional, check before MR.", "Fall risk.", "Previous anaphylaxis to iodinated contrast."}
	otherStatuses = []qubs.Status{qubs.StatusNotArrived, qubs.StatusArrived, qubs.StatusDidNotAttend, qubs.StatusCancelled,
		qubs.StatusCancellationList, qubs.StatusDictationInProgress, qubs.StatusDictated, qubs.StatusTyped,
		qubs.StatusAuthorising, qubs.StatusAuthorised}
)

type patient struct {
	id, first, last, gender string
	dob                     *string
}

type gen struct {
	s     *Sim
	rng   *mrand.Rand
	zones map[string]*time.Location
}

// seed fills s with deterministic data: total PENDING REPORTING
// appointments (85% in acme, 10% northside, 5% coastal), plus two (acme) or
// one (others) appointments of every other status.
func seed(s *Sim, seedValue int64, total int) {
	g := &gen{s: s, rng: mrand.New(mrand.NewPCG(uint64(seedValue), 0xc0ffee)), zones: map[string]*time.Location{}}
	for _, sites := range domainSites {
		for _, st := range sites {
			loc, err := time.LoadLocation(st.tz)
			if err != nil {
				panic(err) // time/tzdata is embedded
			}
			g.zones[st.name] = loc
		}
	}
	north, coastal := total/10, total/20
	counts := map[string]int{"acme": total - north - coastal, "northside": north, "coastal": coastal}
	idFormats := map[string]string{"acme": "A%06d", "northside": "NS-%06d", "coastal": "%07d"}
	idStarts := map[string]int{"acme": 200000, "northside": 100000, "coastal": 8800000}
	for _, dom := range seededDomains {
		dd := s.domain(dom)
		pending := counts[dom]
		pats := g.patients(dom, max(3, pending/3))
		if dom == "acme" {
			pending -= g.showcase(dd, pending)
		}
		next := idStarts[dom]
		newID := func() string {
			next += 1 + g.rng.IntN(7)
			return fmt.Sprintf(idFormats[dom], next)
		}
		for range pending {
			g.add(dd, g.appointment(dom, newID(), pats[g.rng.IntN(len(pats))], qubs.StatusPendingReporting))
		}
		per := 1
		if dom == "acme" {
			per = 2
		}
		for _, st := range otherStatuses {
			for range per {
				g.add(dd, g.appointment(dom, newID(), pats[g.rng.IntN(len(pats))], st))
			}
		}
		for _, p := range pats {
			if p.id != "" && g.rng.IntN(100) < 15 {
				g.patientComment(dd, p)
			}
		}
		dd.sortOrder()
	}
}

func (g *gen) pick(list []string) string { return list[g.rng.IntN(len(list))] }

func (g *gen) patients(dom string, n int) []patient {
	out := make([]patient, n)
	base := map[string]int{"acme": 230000, "northside": 510000, "coastal": 770000}[dom]
	for i := range out {
		p := patient{first: g.pick(firstNames), last: g.pick(lastNames)}
		// A few unidentified patients: their appointments have no
		// patientId, so no patient-level comments either.
		if g.rng.IntN(100) >= 4 {
			p.id = strconv.Itoa(base + i*3 + g.rng.IntN(3))
		}
		if g.rng.IntN(100) >= 4 {
			d := time.Date(1930, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, g.rng.IntN(94*365)).Format(time.DateOnly)
			p.dob = &d
		}
		switch r := g.rng.IntN(100); {
		case r < 48:
			p.gender = "F"
		case r < 96:
			p.gender = "M"
		case r < 98:
			p.gender = "X"
		case r < 99:
			p.gender = "U"
		}
		out[i] = p
	}
	return out
}

func (g *gen) add(dd *domainData, a *apptState) {
	a.a.Domain = dd.name
	a.key = g.s.orderKeyOf(dd.name, a.a.AppointmentID)
	dd.appts[a.a.AppointmentID] = a
	dd.order = append(dd.order, a)
}

func (g *gen) guid() string { return uuidFrom(g.rng.Uint64(), g.rng.Uint64()) }

// dicomUID returns a UUID-derived DICOM UID (PS3.5 B.2): "2.25." and the
// UUID as an unsigned decimal.
func (g *gen) dicomUID() string {
	n := new(big.Int).SetUint64(g.rng.Uint64())
	n.Lsh(n, 64)
	n.Or(n, new(big.Int).SetUint64(g.rng.Uint64()))
	return "2.25." + n.String()
}

var (
	seasonStart = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	dstDays     = []time.Time{time.Date(2025, 4, 6, 0, 0, 0, 0, time.UTC), time.Date(2025, 10, 5, 0, 0, 0, 0, time.UTC)}
)

func (g *gen) appointment(dom, id string, p patient, st qubs.Status) *apptState {
	r := g.rng
	sites := domainSites[dom]
	site := sites[r.IntN(len(sites))]
	ex := g.exam()
	a := qubs.Appointment{
		AppointmentID:    id,
		Status:           st,
		ScheduledSite:    site.name,
		PatientID:        p.id,
		PatientName:      p.first + " " + p.last,
		FirstName:        p.first,
		LastName:         p.last,
		DateOfBirth:      cloneStr(p.dob),
		Gender:           p.gender,
		Modality:         ex.mod,
		StudyDescription: ex.desc,
	}
	// Dates span March to November 2025, so both daylight saving changes;
	// a few land on the change days, some in the small hours.
	day := seasonStart.AddDate(0, 0, r.IntN(275))
	if r.IntN(100) < 4 {
		day = dstDays[r.IntN(2)]
	}
	mins := 7*60 + 15*r.IntN(50)
	if day.Equal(dstDays[0]) || day.Equal(dstDays[1]) {
		if r.IntN(2) == 0 {
			mins = 2*60 + 15*r.IntN(8) // 02:00-03:45: repeated or skipped in Sydney
		}
	}
	date := day.Format(time.DateOnly)
	start := fmt.Sprintf("%02d:%02d:00", mins/60, mins%60)
	end := fmt.Sprintf("%02d:%02d:00", (mins+ex.mins)/60, (mins+ex.mins)%60)
	switch x := r.IntN(100); {
	case x < 3: // no date or time at all
	case x < 5:
		a.AppointmentDate = &date
	case x < 13:
		a.AppointmentDate, a.StartTime = &date, &start
	default:
		a.AppointmentDate, a.StartTime, a.EndTime = &date, &start, &end
	}
	if r.IntN(100) < 90 {
		a.ClinicalInfo = g.pick(clinicalInfos)
	}
	if r.IntN(100) < 95 {
		a.DoctorName = g.pick(doctors)
	}
	if r.IntN(100) < 80 {
		a.ClinicName = g.pick(clinics)
	}
	switch x := r.IntN(100); {
	case x < 60:
		a.Priority = "Routine"
	case x < 80:
		a.Priority = "Urgent"
	case x < 88:
		a.Priority = "STAT"
	case x < 95:
		a.Priority = "Semi-urgent"
	}
	if a.StartTime != nil && r.IntN(100) < 35 {
		a.ReportNeededBy = g.deadline(site.name, date, mins, a.Priority)
	}
	if r.IntN(100) < 92 {
		a.StudyInstanceUID = g.dicomUID()
	}
	if r.IntN(100) < 40 {
		u := radiologists[r.IntN(len(radiologists))]
		a.RadiologistUser = &u
	}
	switch x := r.IntN(100); {
	case x < 7: // absent
	case x < 15:
		a.ServiceItems = []qubs.ServiceItem{}
	default:
		a.ServiceItems = []qubs.ServiceItem{g.serviceItem(ex, x < 25)}
		if r.IntN(100) < 15 {
			a.ServiceItems = append(a.ServiceItems, g.serviceItem(g.exam(), false))
		}
	}
	ap := &apptState{a: a}
	g.attachments(ap)
	if r.IntN(100) < 25 {
		for range 1 + r.IntN(2) {
			g.apptComment(ap)
		}
	}
	return ap
}

func (g *gen) exam() exam {
	// Weighted by modality: plain film and CT dominate a practice's work.
	switch x := g.rng.IntN(100); {
	case x < 25:
		return exams[g.rng.IntN(5)] // CT
	case x < 40:
		return exams[5+g.rng.IntN(3)] // MR
	case x < 60:
		return exams[8+g.rng.IntN(4)] // US
	case x < 85:
		return exams[12+g.rng.IntN(4)] // CR, DX
	case x < 90:
		return exams[16+g.rng.IntN(2)] // NM
	default:
		return exams[18] // MG
	}
}

// deadline returns reportNeededBy in UTC: the appointment's local start in
// the site's zone plus a turnaround by priority.
func (g *gen) deadline(site, date string, mins int, priority string) *time.Time {
	d, _ := time.Parse(time.DateOnly, date)
	local := time.Date(d.Year(), d.Month(), d.Day(), mins/60, mins%60, 0, 0, g.zones[site])
	h := 72 * time.Hour
	switch priority {
	case "STAT":
		h = 4 * time.Hour
	case "Urgent":
		h = 24 * time.Hour
	}
	t := local.Add(h).UTC()
	return &t
}

func (g *gen) serviceItem(ex exam, extra bool) qubs.ServiceItem {
	m := map[string]any{"itemNumber": ex.item, "description": ex.itemDesc, "fee": ex.fee}
	if extra {
		// Keys QUBS may add that a client must carry through untouched.
		m["benefit"] = float64(int(ex.fee*85)) / 100
		m["modifiers"] = []string{"R"}
	}
	b, _ := json.Marshal(m)
	return qubs.ServiceItem(b)
}

func (g *gen) attachments(ap *apptState) {
	r := g.rng
	add := func(category, name string) {
		added := g.before(ap, 1+r.IntN(240))
		mod := added
		if r.IntN(4) == 0 {
			mod = added.Add(time.Duration(r.IntN(3600)) * time.Second)
		}
		at := &attachment{meta: qubs.Attachment{
			GUID: g.guid(), Category: category, FileName: name, AddedDateTime: &added, LastModifiedDateTime: &mod,
		}, genText: fmt.Sprintf("QUBS simulator | %s | appointment %s | %s", category, ap.a.AppointmentID, ap.a.StudyDescription)}
		if r.IntN(100) < 60 {
			u := staff[r.IntN(len(staff))]
			at.meta.AddedBy = &u
		}
		ap.attachments = append(ap.attachments, at)
	}
	if r.IntN(100) < 75 {
		add("Referral", "referral.pdf")
	}
	if r.IntN(100) < 30 {
		add("Worksheet", "worksheet.pdf")
	}
	switch x := r.IntN(100); {
	case x < 3:
		add("Consent", "consent form.pdf")
	case x < 5:
		add("Prior Imaging", "prior-study.dcm")
	case x < 6:
		add("Other", "scan-notes")
	}
}

// before returns a UTC time some hours before the appointment (or before
// the season when the appointment has no date).
func (g *gen) before(ap *apptState, hours int) time.Time {
	base := seasonStart
	if ap.a.AppointmentDate != nil {
		base, _ = time.Parse(time.DateOnly, *ap.a.AppointmentDate)
	}
	return base.Add(-time.Duration(hours) * time.Hour).Add(time.Duration(g.rng.IntN(3600)) * time.Second)
}

func (g *gen) author() *qubs.UserSummary {
	if g.rng.IntN(100) < 15 {
		return nil
	}
	u := staff[g.rng.IntN(len(staff))]
	return &u
}

func (g *gen) apptComment(ap *apptState) {
	c := &qubs.Comment{GUID: g.guid(), AppointmentID: ap.a.AppointmentID, PatientID: ap.a.PatientID, CommentBy: g.author()}
	if g.rng.IntN(100) < 30 {
		c.CommentType, c.IsAlert, c.CommentText = qubs.CommentAppointmentAlert, true, g.pick(apptAlerts)
	} else {
		c.CommentType, c.CommentText = qubs.CommentAppointment, g.pick(apptComments)
	}
	t := g.before(ap, 1+g.rng.IntN(48))
	c.CommentDateTime, c.LastModifiedDateTime = &t, &t
	ap.comments = append(ap.comments, c)
}

func (g *gen) patientComment(dd *domainData, p patient) {
	c := &qubs.Comment{GUID: g.guid(), PatientID: p.id, CommentBy: g.author()}
	if g.rng.IntN(100) < 50 {
		c.CommentType, c.IsAlert, c.CommentText = qubs.CommentPatientAlert, true, g.pick(patAlerts)
	} else {
		c.CommentType, c.CommentText = qubs.CommentPatient, g.pick(patComments)
	}
	t := seasonStart.Add(-time.Duration(g.rng.IntN(24*365)) * time.Hour)
	c.CommentDateTime, c.LastModifiedDateTime = &t, &t
	dd.patientComments[p.id] = append(dd.patientComments[p.id], c)
}

func strp(s string) *string { return &s }

func timep(s string) *time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return &t
}

// showcase adds acme's hand-made appointments, at most limit of them, and
// returns how many it added. The first is the documentation's own example.
func (g *gen) showcase(dd *domainData, limit int) int {
	jane := patient{id: "220000", first: "Jane", last: "Doe", gender: "F", dob: strp("1988-03-03")}
	ct := exams[1]
	cases := []func() *apptState{
		func() *apptState { // the documentation's example, field for field
			a := g.appointment("acme", "A123456", jane, qubs.StatusPendingReporting)
			a.a.ScheduledSite = "Central Clinic"
			a.a.AppointmentDate, a.a.StartTime, a.a.EndTime = strp("2025-01-12"), strp("13:45:00"), strp("14:15:00")
			a.a.Modality, a.a.StudyDescription, a.a.ClinicalInfo = "CT", "CT Chest", "Shortness of breath"
			a.a.DoctorName, a.a.ClinicName, a.a.Priority = "Dr Smith", "Example Clinic", "Routine"
			a.a.ReportNeededBy = timep("2025-01-13T02:00:00Z")
			a.a.StudyInstanceUID = "1.2.3.4.5"
			a.a.RadiologistUser = userp(radiologists[0])
			a.a.ServiceItems = []qubs.ServiceItem{g.serviceItem(ct, false)}
			added := timep("2025-01-10T01:02:03Z")
			a.attachments = []*attachment{{meta: qubs.Attachment{
				GUID: "989dd0c7-13bb-4bba-b7a0-53a28bdf5155", Category: "Referral", FileName: "referral.pdf",
				AddedDateTime: added, AddedBy: userp(staff[1]), LastModifiedDateTime: added,
			}, genText: "QUBS simulator | Referral | appointment A123456 | CT Chest"}}
			when := timep("2025-01-10T02:03:04Z")
			a.comments = []*qubs.Comment{{
				GUID: "ed6ef45a-4e3d-41b2-8049-7aec53bb9ab1", CommentType: qubs.CommentAppointment, AppointmentID: "A123456",
				PatientID: "220000", CommentText: "Patient requires wheelchair access.", CommentDateTime: when,
				CommentBy: userp(staff[0]), LastModifiedDateTime: when,
			}}
			return a
		},
		func() *apptState { // Sydney, the repeated hour as daylight saving ends
			a := g.appointment("acme", "A123457", patient{id: "220003", first: "Seán", last: "O'Brien", gender: "M", dob: strp("1951-07-30")}, qubs.StatusPendingReporting)
			a.a.ScheduledSite, a.a.Priority = "Central Clinic", "STAT"
			a.a.AppointmentDate, a.a.StartTime, a.a.EndTime = strp("2025-04-06"), strp("02:30:00"), strp("02:45:00")
			a.a.Modality, a.a.StudyDescription, a.a.ClinicalInfo = "CT", "CT Brain", "Headache, worst ever, ?SAH"
			return a
		},
		func() *apptState { // Sydney, a time that does not exist as daylight saving starts
			a := g.appointment("acme", "A123458", patient{id: "220006", first: "Zoë", last: "D'Souza", gender: "F", dob: strp("1979-11-02")}, qubs.StatusPendingReporting)
			a.a.ScheduledSite, a.a.Priority = "Central Clinic", "STAT"
			a.a.AppointmentDate, a.a.StartTime, a.a.EndTime = strp("2025-10-05"), strp("02:30:00"), strp("03:05:00")
			a.a.Modality, a.a.StudyDescription, a.a.ClinicalInfo = "CT", "CT Pulmonary Angiogram", "?PE, raised D-dimer"
			return a
		},
		func() *apptState { // Perth has no daylight saving
			a := g.appointment("acme", "A123459", patient{id: "220009", first: "José", last: "Nguyễn", gender: "M", dob: strp("1990-02-28")}, qubs.StatusPendingReporting)
			a.a.ScheduledSite = "Perth Imaging"
			a.a.AppointmentDate, a.a.StartTime, a.a.EndTime = strp("2025-10-05"), strp("09:00:00"), strp("09:30:00")
			return a
		},
		func() *apptState { // Brisbane has no daylight saving
			a := g.appointment("acme", "A123460", patient{id: "220012", first: "Þór", last: "Guðmundsson", gender: "M", dob: strp("1985-06-17")}, qubs.StatusPendingReporting)
			a.a.ScheduledSite = "Brisbane Radiology"
			a.a.AppointmentDate, a.a.StartTime, a.a.EndTime = strp("2025-10-05"), strp("08:00:00"), strp("08:20:00")
			return a
		},
		func() *apptState { // every optional field missing
			a := g.appointment("acme", "A123461", patient{}, qubs.StatusPendingReporting)
			a.a = qubs.Appointment{AppointmentID: "A123461", Status: qubs.StatusPendingReporting, ScheduledSite: "Central Clinic"}
			a.attachments, a.comments = nil, nil
			return a
		},
		func() *apptState { // Adelaide (+10:30/+09:30), repeated hour, odd priority, empty service items
			a := g.appointment("acme", "A123462", patient{id: "220015", first: "Aroha", last: "Ngata", gender: "F", dob: strp("2001-01-01")}, qubs.StatusPendingReporting)
			a.a.ScheduledSite, a.a.Priority = "Adelaide Diagnostic Imaging", "Semi-urgent"
			a.a.AppointmentDate, a.a.StartTime, a.a.EndTime = strp("2025-04-06"), strp("02:15:00"), strp("02:45:00")
			a.a.ServiceItems = []qubs.ServiceItem{}
			return a
		},
		func() *apptState { // Jane Doe again: a patient with several appointments and a patient alert
			a := g.appointment("acme", "A123463", jane, qubs.StatusPendingReporting)
			a.a.ScheduledSite = "Central Clinic"
			a.a.AppointmentDate, a.a.StartTime, a.a.EndTime = strp("2025-03-20"), strp("10:00:00"), strp("10:30:00")
			a.a.Modality, a.a.StudyDescription = "MR", "MRI Knee"
			a.a.ServiceItems = []qubs.ServiceItem{g.serviceItem(exams[6], true)}
			when := timep("2025-03-01T00:00:00Z")
			dd.patientComments["220000"] = append(dd.patientComments["220000"], &qubs.Comment{
				GUID: g.guid(), CommentType: qubs.CommentPatientAlert, PatientID: "220000",
				CommentText: "Pacemaker — MR conditional, check before MR.", CommentDateTime: when, IsAlert: true,
				CommentBy: userp(staff[2]), LastModifiedDateTime: when,
			})
			return a
		},
		func() *apptState { // Darwin (+09:30, no DST), no priority, multi-line clinical info
			a := g.appointment("acme", "A123464", patient{id: "220018", first: "Chloé", last: "Smith-Jones", gender: "X"}, qubs.StatusPendingReporting)
			a.a.ScheduledSite, a.a.Priority = "Darwin Radiology", ""
			a.a.Modality, a.a.StudyDescription = "MG", "Mammogram Bilateral"
			a.a.ClinicalInfo = "Palpable lump left breast.\nFamily history: mother (breast Ca at 45)."
			return a
		},
	}
	n := 0
	for _, c := range cases {
		if n == limit {
			break
		}
		g.add(dd, c())
		n++
	}
	return n
}

func userp(u qubs.UserSummary) *qubs.UserSummary { return &u }
