package mapping

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// modelJSON is what the bridge emitted before the direct encoder: the
// samply models' MarshalJSON. nil for a resource the worklist lacks.
func modelJSON(t testing.TB, v interface{ MarshalJSON() ([]byte, error) }, isNil bool) []byte {
	t.Helper()
	if isNil {
		return nil
	}
	b, err := v.MarshalJSON()
	require.NoError(t, err)
	return b
}

// requireSameAsModels maps a both ways and requires the direct encoder to
// write exactly the bytes the models did, and to report the ids and
// references the models hold.
func requireSameAsModels(t testing.TB, a *qubs.Appointment, z *Zones) {
	t.Helper()
	w, errW := FromAppointment(a, z)
	m, errM := Map(a, z)
	if errW != nil || errM != nil {
		require.Error(t, errW)
		require.ErrorIs(t, errM, ErrUnrepresentable, "fails exactly when FromAppointment does: %v", errW)
		return
	}
	sr := &w.ServiceRequest
	require.Equal(t, string(modelJSON(t, sr, false)), string(m.AppendServiceRequest(nil)), "ServiceRequest")
	require.Equal(t, string(modelJSON(t, w.Patient, w.Patient == nil)), string(m.AppendPatient(nil)), "Patient")
	require.Equal(t, string(modelJSON(t, w.Referrer, w.Referrer == nil)), string(m.AppendReferrer(nil)), "referrer")
	require.Equal(t, string(modelJSON(t, w.Radiologist, w.Radiologist == nil)), string(m.AppendRadiologist(nil)), "radiologist")
	require.Equal(t, string(modelJSON(t, w.Clinic, w.Clinic == nil)), string(m.AppendClinic(nil)), "clinic")

	// What a search filters and includes on.
	require.Equal(t, *sr.Id, m.ID)
	require.Equal(t, sr.Status, m.Status)
	var ids [][2]string
	for sys, val := range m.Identifiers {
		ids = append(ids, [2]string{sys, val})
	}
	var want [][2]string
	for _, id := range sr.Identifier {
		want = append(want, [2]string{*id.System, *id.Value})
	}
	require.Equal(t, want, ids, "identifiers")
	if sr.Subject.Reference != nil {
		require.Equal(t, *sr.Subject.Reference, "Patient/"+m.PatientID)
	} else {
		require.Empty(t, m.PatientID)
	}
	typ, id := m.Requester()
	if sr.Requester != nil {
		require.Equal(t, *sr.Requester.Reference, typ+"/"+id)
	} else {
		require.Empty(t, typ+id)
	}
	if len(sr.Performer) > 0 {
		require.Equal(t, *sr.Performer[0].Reference, "Practitioner/"+m.RadiologistID)
	} else {
		require.Empty(t, m.RadiologistID)
	}
	for ref, body := range map[string][]byte{
		"Patient/" + m.PatientID:            m.AppendPatient(nil),
		"Organization/" + m.ClinicID:        m.AppendClinic(nil),
		"Practitioner/" + m.ReferrerID:      m.AppendReferrer(nil),
		"Practitioner/" + m.RadiologistID:   m.AppendRadiologist(nil),
		"Patient/not-" + m.PatientID:        nil,
		"ServiceRequest/" + m.ID:            nil,
		"Organization/x" + m.ClinicID + "x": nil,
	} {
		got, ok := m.AppendRelated([]byte("prefix"), ref)
		if len(body) == 0 {
			require.False(t, ok, ref)
			require.Equal(t, "prefix", string(got), ref)
			continue
		}
		require.True(t, ok, ref)
		require.Equal(t, "prefix"+string(body), string(got), ref)
	}
}

func TestEncoderGoldenCorpus(t *testing.T) {
	t.Parallel()
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.qubs.json"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(inputs), 10, "golden cases went missing")
	for _, z := range []*Zones{testZones(t), nil} {
		for _, in := range inputs {
			t.Run(strings.TrimSuffix(filepath.Base(in), ".qubs.json"), func(t *testing.T) {
				raw, err := os.ReadFile(in)
				require.NoError(t, err)
				var a qubs.Appointment
				require.NoError(t, json.Unmarshal(raw, &a))
				requireSameAsModels(t, &a, z)
			})
		}
	}
}

// TestEncoderSimulatorSeed compares the encoders on every appointment the
// simulator seeds, any status, with the sites' own zones.
func TestEncoderSimulatorSeed(t *testing.T) {
	t.Parallel()
	sim := qubssim.New(qubssim.Options{Seed: 1})
	var spec []string
	for site, zone := range sim.SiteTimeZones() {
		spec = append(spec, site+"="+zone)
	}
	slices.Sort(spec)
	z, err := NewZones("Australia/Sydney", strings.Join(spec, ";"))
	require.NoError(t, err)
	n := 0
	for _, domain := range sim.Domains() {
		for _, id := range sim.AppointmentIDs(domain) {
			a, ok := sim.Appointment(domain, id)
			require.True(t, ok)
			requireSameAsModels(t, &a, z)
			n++
		}
	}
	require.GreaterOrEqual(t, n, 1200, "the seed must be large enough to mean something")
}

// oddStrings are values that exercise encoding/json's escaping and
// sanitize: HTML characters, JSONP separators, control characters,
// invalid UTF-8, non-ASCII case folding.
var oddStrings = []string{
	"", "<b>x</b> & y", "a\u2028b\u2029c", "tab\there", "nul\x00", "bell\a", "bad \xff\xfe utf8", "caf\xe9",
	"quote\" back\\slash", "line\r\nbreak", "\u007f del", "Zoë Trần", "  spaced  ", "日本語", "\ufeffbom",
	"profeſſor Smith", "DR. Ann Lee", "Dr\u00a0Lee", "A/PROF  Bo", "\x1b[31m", "\\u003c", "emoji 😀",
}

func oddAppointment(r *rand.Rand, i int) qubs.Appointment {
	a := randomAppointment(r, i)
	s := func() string { return randomPick(r, oddStrings...) }
	p := func() *string {
		if r.IntN(3) == 0 {
			return nil
		}
		v := s()
		return &v
	}
	switch r.IntN(4) {
	case 0:
		a.PatientName, a.FirstName, a.LastName, a.Gender = s(), s(), s(), s()
		a.DoctorName, a.ClinicName, a.ClinicalInfo, a.StudyDescription = s(), s(), s(), s()
	case 1:
		a.Modality, a.Priority, a.ScheduledSite, a.Status = s(), s(), s(), qubs.Status(s())
		a.DateOfBirth, a.StartTime = p(), p()
		a.RadiologistUser = &qubs.UserSummary{Username: s(), FirstName: s(), Initials: s(), LastName: s(), Role: s()}
	case 2:
		a.ServiceItems = append(a.ServiceItems, qubs.ServiceItem(randomPick(r,
			`{"itemNumber":"5<6>&","description":"a\u0001b \u2028 <x>"}`, `{"ITEMNUMBER":"77","Description":"case"}`,
			`{"itemNumber":"1","itemNumber":"2"}`, `{"itemNumber":1e3}`, `{"itemNumber":" 12"}`, `{"itemNumber":"1 2"}`,
			`{"itemNumber":"1\u00a02"}`, `{"itemNumber":"x","description":"\ud800"}`, "{\"description\":\"\xff\"}")))
	case 3:
		a.PatientID, a.StudyInstanceUID, a.Domain = s(), s(), s()
		t := time.Date(10000, 1, 1, 0, 0, 0, 5, time.FixedZone("", -3*3600-30*60))
		a.ReportNeededBy = &t
	}
	return a
}

// TestEncoderRandom compares the encoders on appointments from the
// mapping's seeded generator, plain and with odd strings mixed in, both
// as built and after a trip through JSON as QUBS data arrives.
func TestEncoderRandom(t *testing.T) {
	t.Parallel()
	z := testZones(t)
	rng := rand.New(rand.NewPCG(2026, 10))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for i := range n {
		a := randomAppointment(rng, i)
		if i%2 == 1 {
			a = oddAppointment(rng, i)
		}
		requireSameAsModels(t, &a, z)
		raw, err := json.Marshal(a)
		if err != nil {
			continue // a year JSON cannot carry, compared above
		}
		var in qubs.Appointment
		require.NoError(t, json.Unmarshal(raw, &in))
		requireSameAsModels(t, &in, z)
	}
}

// TestEncoderDateBoundaries: the occurrence's date and time, written by
// hand, at the ends of the years AppendFormat writes and past them (an end
// after midnight on 9999-12-31 is in year 10000), and across a DST change.
func TestEncoderDateBoundaries(t *testing.T) {
	t.Parallel()
	z := testZones(t)
	str := func(s string) *string { return &s }
	for _, tc := range []struct{ date, start, end string }{
		{"0001-01-01", "00:00:00", "00:00:01"},
		{"9999-12-31", "23:30:00", "00:15:00"},
		{"2025-04-06", "02:30:00", "03:15:00"},
		{"2025-10-05", "02:10:09", "01:59:59"},
	} {
		t.Run(tc.date, func(t *testing.T) {
			a := randomAppointment(rand.New(rand.NewPCG(1, 2)), 0)
			a.AppointmentDate, a.StartTime, a.EndTime = str(tc.date), str(tc.start), str(tc.end)
			requireSameAsModels(t, &a, z)
		})
	}
}

// FuzzEncoder compares the encoders on appointments decoded from fuzzed
// QUBS JSON.
func FuzzEncoder(f *testing.F) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.qubs.json"))
	require.NoError(f, err)
	for _, in := range inputs {
		raw, err := os.ReadFile(in)
		require.NoError(f, err)
		f.Add(raw)
	}
	z := testZones(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		var a qubs.Appointment
		if json.Unmarshal(raw, &a) != nil {
			return
		}
		requireSameAsModels(t, &a, z)
	})
}

// BenchmarkMapAppointment is what the worklist pays per appointment:
// mapping and encoding the ServiceRequest entry ("entry"), or every
// resource, as BenchmarkFromAppointment does ("all").
func BenchmarkMapAppointment(b *testing.B) {
	a := loadCase(b, "typical_ct")
	z := testZones(b)
	buf := make([]byte, 0, 8192)
	b.Run("entry", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m, err := Map(&a, z)
			if err != nil {
				b.Fatal(err)
			}
			buf = m.AppendServiceRequest(buf[:0])
		}
	})
	b.Run("all", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m, err := Map(&a, z)
			if err != nil {
				b.Fatal(err)
			}
			buf = m.AppendServiceRequest(buf[:0])
			buf = m.AppendPatient(buf)
			buf = m.AppendReferrer(buf)
			buf = m.AppendRadiologist(buf)
			buf = m.AppendClinic(buf)
		}
	})
}

func TestMappedFirstCase(t *testing.T) {
	t.Parallel()
	a := loadCase(t, "typical_ct")
	m, err := Map(&a, testZones(t))
	require.NoError(t, err)
	assert.True(t, json.Valid(m.AppendServiceRequest(nil)))
}
