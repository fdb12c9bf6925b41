package qubssim_test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

func allAppointments(s *qubssim.Sim, domain string) []qubs.Appointment {
	var out []qubs.Appointment
	for _, id := range s.PendingIDs(domain) {
		a, _ := s.Appointment(domain, id)
		out = append(out, a)
	}
	return out
}

func TestSeedCountsAndDomains(t *testing.T) {
	tests := []struct {
		name  string
		opts  qubssim.Options
		total int
	}{
		{"default", qubssim.Options{}, 1200},
		{"small", qubssim.Options{Appointments: 40, Seed: 7}, 40},
		{"tiny", qubssim.Options{Appointments: 3}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := qubssim.New(tc.opts)
			doms := s.Domains()
			require.Equal(t, []string{"acme", "coastal", "northside"}, doms)
			total := 0
			for _, d := range doms {
				total += len(s.PendingIDs(d))
			}
			assert.Equal(t, tc.total, total)
			if tc.total == 1200 {
				assert.GreaterOrEqual(t, len(s.PendingIDs("acme")), 1000, "a worklist walk of acme must cover 1,000+")
			}
		})
	}
}

func TestSeedIsDeterministic(t *testing.T) {
	a, b := qubssim.New(qubssim.Options{Seed: 42}), qubssim.New(qubssim.Options{Seed: 42})
	c := qubssim.New(qubssim.Options{Seed: 43})
	ja, _ := json.Marshal(allAppointments(a, "acme"))
	jb, _ := json.Marshal(allAppointments(b, "acme"))
	jc, _ := json.Marshal(allAppointments(c, "acme"))
	assert.Equal(t, string(ja), string(jb))
	assert.NotEqual(t, string(ja), string(jc))
}

// TestSeedVariety checks the seeded data holds the cases clients get wrong.
func TestSeedVariety(t *testing.T) {
	s := qubssim.New(qubssim.Options{})
	uid := regexp.MustCompile(`^2\.25\.(0|[1-9][0-9]*)$`)
	hhmmss := regexp.MustCompile(`^([01]\d|2[0-3]):[0-5]\d:[0-5]\d$`)
	seen := map[string]bool{}
	mark := func(k string, cond bool) {
		if cond {
			seen[k] = true
		}
	}
	perPatient := map[string]int{}
	for _, d := range s.Domains() {
		for _, a := range allAppointments(s, d) {
			assert.Equal(t, d, a.Domain)
			assert.Equal(t, qubs.StatusPendingReporting, a.Status)
			assert.NotEmpty(t, a.ScheduledSite)
			for _, tm := range []*string{a.StartTime, a.EndTime} {
				if tm != nil {
					assert.Regexp(t, hhmmss, *tm)
				}
			}
			if a.AppointmentDate != nil {
				_, err := time.Parse(time.DateOnly, *a.AppointmentDate)
				assert.NoError(t, err)
				mark("dst-start", *a.AppointmentDate == "2025-10-05")
				mark("dst-end", *a.AppointmentDate == "2025-04-06")
			}
			if a.StudyInstanceUID != "" && a.StudyInstanceUID != "1.2.3.4.5" {
				assert.Regexp(t, uid, a.StudyInstanceUID)
				assert.LessOrEqual(t, len(a.StudyInstanceUID), 64)
			}
			for _, it := range a.ServiceItems {
				f := it.Fields()
				require.NotNil(t, f)
				assert.NotEmpty(t, f["itemNumber"])
				mark("extra-item-keys", f["modifiers"] != nil)
			}
			perPatient[a.PatientID]++
			mark("no-patient-id", a.PatientID == "")
			mark("no-dob", a.DateOfBirth == nil)
			mark("no-end", a.EndTime == nil)
			mark("no-date", a.AppointmentDate == nil)
			mark("apostrophe", strings.Contains(a.PatientName, "'"))
			mark("non-ascii", strings.ContainsAny(a.PatientName, "ëéễÞ"))
			mark("absent-items", a.ServiceItems == nil)
			mark("empty-items", a.ServiceItems != nil && len(a.ServiceItems) == 0)
			mark("deadline", a.ReportNeededBy != nil)
			mark("radiologist", a.RadiologistUser != nil)
			mark("prio-"+a.Priority, true)
			mark("mod-"+a.Modality, true)
			mark("site-"+a.ScheduledSite, true)
		}
	}
	for _, k := range []string{"dst-start", "dst-end", "extra-item-keys", "no-patient-id", "no-dob", "no-end", "no-date",
		"apostrophe", "non-ascii", "absent-items", "empty-items", "deadline", "radiologist",
		"prio-Routine", "prio-Urgent", "prio-STAT", "prio-Semi-urgent", "prio-",
		"mod-CT", "mod-MR", "mod-US", "mod-CR", "mod-DX", "mod-NM", "mod-MG",
		"site-Central Clinic", "site-Perth Imaging", "site-Brisbane Radiology"} {
		assert.True(t, seen[k], "seeded data lacks %s", k)
	}
	several := 0
	for id, n := range perPatient {
		if id != "" && n > 1 {
			several++
		}
	}
	assert.Greater(t, several, 10, "patients with several appointments")

	// Every other status exists, in every seeded domain, and is not pending.
	for _, d := range s.Domains() {
		statuses := map[qubs.Status]bool{}
		for _, id := range s.AppointmentIDs(d) {
			if a, _ := s.Appointment(d, id); a.Status != qubs.StatusPendingReporting {
				statuses[a.Status] = true
			}
		}
		assert.Len(t, statuses, 10, "domain %s", d)
		assert.True(t, statuses[qubs.StatusCancelled], "APPPOINTMENT CANCELLED in %s", d)
	}
}

func TestSeedShowcaseMatchesDocumentationExample(t *testing.T) {
	s := qubssim.New(qubssim.Options{})
	a, ok := s.Appointment("acme", "A123456")
	require.True(t, ok)
	got, err := json.Marshal(a)
	require.NoError(t, err)
	// The example response of "Get a pending reporting appointment",
	// serviceItems aside (QUBS shows them as [{}]).
	want := `{"domain":"acme","appointmentId":"A123456","status":"PENDING REPORTING","scheduledSite":"Central Clinic",` +
		`"appointmentDate":"2025-01-12","startTime":"13:45:00","endTime":"14:15:00","patientId":"220000","patientName":"Jane Doe",` +
		`"firstName":"Jane","lastName":"Doe","dateOfBirth":"1988-03-03","gender":"F","modality":"CT","studyDescription":"CT Chest",` +
		`"clinicalInfo":"Shortness of breath","doctorName":"Dr Smith","clinicName":"Example Clinic","priority":"Routine",` +
		`"reportNeededBy":"2025-01-13T02:00:00Z","studyInstanceUid":"1.2.3.4.5","radiologistUser":{"username":"rsmith",` +
		`"firstName":"Rory","initials":"RS","lastName":"Smith","role":"Radiologist"},` +
		`"serviceItems":[{"description":"CT chest","fee":380.5,"itemNumber":"56301"}]}`
	assert.JSONEq(t, want, string(got))

	bare, ok := s.Appointment("acme", "A123461")
	require.True(t, ok)
	b, _ := json.Marshal(bare)
	assert.JSONEq(t, `{"domain":"acme","appointmentId":"A123461","status":"PENDING REPORTING","scheduledSite":"Central Clinic",
		"appointmentDate":null,"startTime":null,"endTime":null,"dateOfBirth":null,"reportNeededBy":null}`, string(b))
}

func TestSiteTimeZones(t *testing.T) {
	s := qubssim.New(qubssim.Options{Appointments: 10})
	tz := s.SiteTimeZones()
	assert.Equal(t, "Australia/Sydney", tz["Central Clinic"])
	assert.Equal(t, "Australia/Perth", tz["Perth Imaging"])
	assert.Equal(t, "Australia/Brisbane", tz["Brisbane Radiology"])
	for _, d := range s.Domains() {
		for _, a := range allAppointments(s, d) {
			assert.Contains(t, tz, a.ScheduledSite)
		}
	}
}

// TestSeededPDFIsValid checks the generated referral is a well-formed PDF:
// header, trailer, and an xref table whose offsets point at the objects.
func TestSeededPDFIsValid(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 20})
	tok := token(t, srv)
	resp, body := get(t, srv, tok, apiPath("acme", "/A123456/attachments"))
	var atts []qubs.Attachment
	requireJSON(t, resp, body, 200, &atts)
	require.Len(t, atts, 1)
	resp, pdf := get(t, srv, "", *atts[0].URL)
	require.Equal(t, 200, resp.StatusCode)
	require.True(t, bytes.HasPrefix(pdf, []byte("%PDF-1.4\n")))
	require.True(t, bytes.HasSuffix(pdf, []byte("%%EOF\n")))
	i := bytes.LastIndex(pdf, []byte("startxref\n"))
	require.Positive(t, i)
	xref, err := strconv.Atoi(strings.Fields(string(pdf[i+len("startxref\n"):]))[0])
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(pdf[xref:], []byte("xref\n0 6\n")))
	lines := strings.Split(string(pdf[xref:]), "\n")
	for n := 1; n <= 5; n++ {
		off, err := strconv.Atoi(strings.Fields(lines[2+n])[0])
		require.NoError(t, err)
		assert.True(t, bytes.HasPrefix(pdf[off:], []byte(strconv.Itoa(n)+" 0 obj")), "object %d", n)
	}
	assert.Contains(t, string(pdf), "(QUBS simulator | Referral | appointment A123456 | CT Chest) Tj")
}

func BenchmarkNew(b *testing.B) {
	for b.Loop() {
		qubssim.New(qubssim.Options{})
	}
}
