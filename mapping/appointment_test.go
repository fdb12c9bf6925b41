package mapping

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

func loadCase(t testing.TB, name string) qubs.Appointment {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name+".qubs.json"))
	require.NoError(t, err)
	var a qubs.Appointment
	require.NoError(t, json.Unmarshal(raw, &a))
	return a
}

func TestFromAppointmentErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		a    *qubs.Appointment
	}{
		{"nil", nil},
		{"empty appointment id", &qubs.Appointment{Status: qubs.StatusPendingReporting}},
		{"appointment id too long to encode", &qubs.Appointment{AppointmentID: strings.Repeat("#", 38)}},
		{"appointment id not UTF-8", &qubs.Appointment{AppointmentID: "A\xff"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := FromAppointment(tt.a, nil)
			require.Error(t, err)
			assert.Nil(t, w)
			if tt.a != nil {
				assert.ErrorIs(t, err, ErrUnrepresentable)
			}
		})
	}
}

func TestFromAppointmentLeavesInputAlone(t *testing.T) {
	t.Parallel()
	a := loadCase(t, "typical_ct")
	a.ClinicalInfo = "bell\a"
	a.RadiologistUser.FirstName = "Ro\x00ry"
	a.ServiceItems = append(a.ServiceItems, qubs.ServiceItem(`{"d":"caf\xe9"}`)) // Latin-1, not UTF-8
	user, userCopy := a.RadiologistUser, *a.RadiologistUser
	items := a.ServiceItems
	var itemsCopy []qubs.ServiceItem
	for _, it := range items {
		itemsCopy = append(itemsCopy, append(qubs.ServiceItem(nil), it...))
	}
	before := a

	w, err := FromAppointment(&a, nil)
	require.NoError(t, err)

	assert.Equal(t, before, a)
	assert.Same(t, user, a.RadiologistUser)
	assert.Equal(t, userCopy, *a.RadiologistUser)
	assert.Equal(t, itemsCopy, a.ServiceItems)
	assert.Equal(t, "bell\uFFFD", *w.ServiceRequest.ReasonCode[0].Text)
	assert.Equal(t, "Ro\uFFFDry Smith", *w.Radiologist.Name[0].Text)
	r := resourcesOf(w)
	requireValid(t, r)
	requireRecovered(t, a, recoverAppointment(t, r, nil))
}

// TestEmptyStringsAreNull pins a documented loss: QUBS gives "" and null
// the same meaning for dates and times, and FHIR has no empty strings, so
// "" comes back as absent.
func TestEmptyStringsAreNull(t *testing.T) {
	t.Parallel()
	empty := ""
	a := qubs.Appointment{AppointmentID: "A1", AppointmentDate: &empty, StartTime: &empty, EndTime: &empty, DateOfBirth: &empty, PatientID: "1"}
	w, err := FromAppointment(&a, nil)
	require.NoError(t, err)
	r := resourcesOf(w)
	requireValid(t, r)
	got := recoverAppointment(t, r, nil)
	assert.Nil(t, got.AppointmentDate)
	assert.Nil(t, got.StartTime)
	assert.Nil(t, got.EndTime)
	assert.Nil(t, got.DateOfBirth)
}

func TestNilZonesIsSydney(t *testing.T) {
	t.Parallel()
	a := loadCase(t, "perth_no_dst")
	w, err := FromAppointment(&a, nil)
	require.NoError(t, err)
	assert.Equal(t, "2025-01-20T08:00:00+11:00", *w.ServiceRequest.OccurrencePeriod.Start)
}

func TestStatusPriorityGenderModality(t *testing.T) {
	t.Parallel()
	statuses := map[qubs.Status]fhir.RequestStatus{
		qubs.StatusPendingReporting: fhir.RequestStatusActive, "pending reporting": fhir.RequestStatusActive,
		qubs.StatusNotArrived: fhir.RequestStatusActive, qubs.StatusArrived: fhir.RequestStatusActive,
		qubs.StatusCancellationList: fhir.RequestStatusActive, qubs.StatusDictationInProgress: fhir.RequestStatusActive,
		qubs.StatusDictated: fhir.RequestStatusActive, qubs.StatusTyped: fhir.RequestStatusActive,
		qubs.StatusAuthorising: fhir.RequestStatusActive,
		qubs.StatusCancelled:   fhir.RequestStatusRevoked, "APPOINTMENT CANCELLED": fhir.RequestStatusRevoked,
		qubs.StatusDidNotAttend: fhir.RequestStatusRevoked,
		qubs.StatusAuthorised:   fhir.RequestStatusCompleted,
		"":                      fhir.RequestStatusUnknown, "ON FIRE": fhir.RequestStatusUnknown,
	}
	for in, want := range statuses {
		assert.Equal(t, want.Code(), requestStatus(in).Code(), "status %q", in)
	}

	priorities := map[string]string{
		"Routine": "routine", "ROUTINE": "routine", " routine ": "routine", "Urgent": "urgent",
		"STAT": "stat", "Stat": "stat", "ASAP": "asap", "Semi-urgent": "", "": "", "P1": "",
	}
	for in, want := range priorities {
		p, ok := requestPriority(in)
		if want == "" {
			assert.False(t, ok, "priority %q", in)
			continue
		}
		require.True(t, ok, "priority %q", in)
		assert.Equal(t, want, p.Code(), "priority %q", in)
	}

	genders := map[string]string{
		"M": "male", "Male": "male", "m": "male", "F": "female", "female": "female",
		"O": "other", "Other": "other", "X": "other", "Intersex": "other",
		"U": "unknown", "Unknown": "unknown", "N": "unknown", "?": "unknown",
	}
	for in, want := range genders {
		assert.Equal(t, want, administrativeGender(in).Code(), "gender %q", in)
	}

	mods := map[string]string{
		"CT": "CT", "ct": "CT", "MR": "MR", "MRI": "MR", "US": "US", "Ultrasound": "US", "CR": "CR", "DX": "DX",
		"XR": "DX", "X-Ray": "DX", "NM": "NM", "MG": "MG", "Mammo": "MG", "PT": "PT", "PET-CT": "PT",
		"XA": "XA", "RF": "RF", "Fluoroscopy": "RF", "DEXA": "BMD", "OPG": "PX", "Example modality": "", "": "",
	}
	for in, want := range mods {
		d, ok := modalityCoding(in)
		if want == "" {
			assert.False(t, ok, "modality %q", in)
			continue
		}
		require.True(t, ok, "modality %q", in)
		assert.Equal(t, want, d.code, "modality %q", in)
		assert.NotEmpty(t, d.display)
	}
}

func TestReferrerPrefix(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][]string{
		"Dr Smith": {"Dr"}, "Dr. Smith": {"Dr."}, "DR SMITH": {"DR"}, "Prof Tomás García": {"Prof"},
		"A/Prof Lee": {"A/Prof"}, "Smith": nil, "Dr": nil, "Drew Barry": nil,
	} {
		a := qubs.Appointment{AppointmentID: "A1", DoctorName: in}
		w, err := FromAppointment(&a, nil)
		require.NoError(t, err)
		assert.Equal(t, want, w.Referrer.Name[0].Prefix, in)
		assert.Equal(t, in, *w.Referrer.Name[0].Text)
	}
}

// TestRandomAppointments maps appointments built from a seeded generator
// that mixes realistic values with the odd ones QUBS might send: every
// resource must be valid R4 and every appointment recoverable.
func TestRandomAppointments(t *testing.T) {
	t.Parallel()
	z := testZones(t)
	rng := rand.New(rand.NewPCG(2025, 1))
	n := 400
	if testing.Short() {
		n = 50
	}
	for i := range n {
		a := randomAppointment(rng, i)
		raw, err := json.Marshal(a)
		require.NoError(t, err)
		// Through JSON, as QUBS data arrives.
		var in qubs.Appointment
		require.NoError(t, json.Unmarshal(raw, &in))
		w, err := FromAppointment(&in, z)
		require.NoError(t, err, "%s", raw)
		b, err := json.Marshal(resourcesOf(w))
		require.NoError(t, err)
		var r resources
		require.NoError(t, json.Unmarshal(b, &r))
		requireValid(t, r)
		requireRecovered(t, in, recoverAppointment(t, r, z))
		if t.Failed() {
			t.Fatalf("appointment %d: %s", i, raw)
		}
	}
}

func randomAppointment(r *rand.Rand, i int) qubs.Appointment {
	pick := func(vs ...string) string { return vs[r.IntN(len(vs))] }
	maybe := func(pct int, v string) *string {
		if r.IntN(100) < pct {
			return &v
		}
		return nil
	}
	date := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, r.IntN(365))
	if r.IntN(10) == 0 {
		date = []time.Time{time.Date(2025, 4, 6, 0, 0, 0, 0, time.UTC), time.Date(2025, 10, 5, 0, 0, 0, 0, time.UTC)}[r.IntN(2)]
	}
	clock := func() string {
		if r.IntN(20) == 0 {
			return pick("24:00:00", "9:00", "noon", "12:00:00Z")
		}
		return fmt.Sprintf("%02d:%02d:%02d", r.IntN(24), r.IntN(4)*15, r.IntN(2)*30)
	}
	a := qubs.Appointment{
		Domain:           pick("acme", "northside", "coastal"),
		AppointmentID:    pick(fmt.Sprintf("A%06d", 200000+i), fmt.Sprintf("NS-%06d", i), fmt.Sprintf("APPT/%d #%d", i, r.IntN(9)), fmt.Sprintf("b32-%d", i), fmt.Sprintf("h-%d", i), fmt.Sprintf("Zoë.%d", i)),
		Status:           qubs.Status(pick(string(qubs.StatusPendingReporting), string(qubs.StatusPendingReporting), string(qubs.StatusCancelled), string(qubs.StatusAuthorised), "", "Weird")),
		ScheduledSite:    pick("Central Clinic", "Perth Imaging", "perth imaging", "Brisbane Central", "", "Nowhere"),
		AppointmentDate:  maybe(85, date.Format(time.DateOnly)),
		StartTime:        maybe(75, clock()),
		EndTime:          maybe(65, clock()),
		PatientID:        pick("", "230001", "b32-x", "h-y", "P 1/2", strings.Repeat("é", 25)),
		PatientName:      pick("", "Jane Doe", "Siobhan O'Neill", "Þór Guðmundsson", "Nguyễn Thị Anh", "  spaced  "),
		FirstName:        pick("", "Jane", "Mary Jane", "Zoë"),
		LastName:         pick("", "O'Brien", "van der Berg", "Müller"),
		DateOfBirth:      maybe(80, pick("1988-03-03", "1930-01-01", "2024-02-29", "1988-02-30", "03/03/1988")),
		Gender:           pick("", "F", "M", "X", "U", "female", "Unknown", "unknown", "other", "Nonbinary"),
		Modality:         pick("", "CT", "MR", "MRI", "XR", "US", "Example modality"),
		StudyDescription: pick("", "CT Chest", "MRI Knee — left", "XR Chest"),
		ClinicalInfo:     pick("", "Shortness of breath", "?PE, raised D-dimer", "line1\nline2\ttab", "ctrl\x01char"),
		DoctorName:       pick("", "Dr Smith", "Dr Anh Trần", "Prof Lee", "Smith"),
		ClinicName:       pick("", "Example Clinic", "St Vincent's Emergency"),
		Priority:         pick("", "Routine", "Urgent", "STAT", "stat", "routine", "Semi-urgent"),
		StudyInstanceUID: pick("", "1.2.3.4.5", "2.25.302316948591470834417151245830716853391"),
	}
	if r.IntN(100) < 40 {
		t := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.Int64N(int64(365 * 24 * time.Hour))))
		a.ReportNeededBy = &t
	}
	if r.IntN(100) < 40 {
		a.RadiologistUser = &qubs.UserSummary{
			Username: pick("", "rsmith", "m.okafor@example.com"), FirstName: pick("", "Rory", "Aoife"),
			Initials: pick("", "RS", "AO'B"), LastName: pick("", "Smith", "O'Brien"), Role: pick("", "Radiologist"),
		}
	}
	switch r.IntN(4) {
	case 0: // absent
	case 1:
		a.ServiceItems = []qubs.ServiceItem{}
	default:
		for range 1 + r.IntN(3) {
			a.ServiceItems = append(a.ServiceItems, qubs.ServiceItem(pick(
				`{"itemNumber":"56301","description":"CT chest","fee":380.5}`,
				`{"itemNumber":55036,"benefit":94.98,"modifiers":["R"]}`,
				`{"description":"no number"}`, `"text item"`, `null`, `{}`, `[1,2]`,
			)))
		}
	}
	return a
}

func BenchmarkFromAppointment(b *testing.B) {
	a := loadCase(b, "typical_ct")
	z := testZones(b)
	b.ReportAllocs()
	for b.Loop() {
		w, err := FromAppointment(&a, z)
		if err != nil {
			b.Fatal(err)
		}
		for _, v := range []any{w.ServiceRequest, w.Patient, w.Referrer, w.Radiologist, w.Clinic} {
			if _, err := json.Marshal(v); err != nil {
				b.Fatal(err)
			}
		}
	}
}
