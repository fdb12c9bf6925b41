package worklist

import (
	"crypto/sha256"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

func fullAppointment() qubs.Appointment {
	str := func(s string) *string { return &s }
	due := time.Date(2026, 12, 3, 9, 30, 0, 500, time.FixedZone("AEDT", 11*3600))
	return qubs.Appointment{
		Domain: "acme", AppointmentID: "123456", Status: qubs.StatusPendingReporting, ScheduledSite: "NTH",
		AppointmentDate: str("2026-12-02"), StartTime: str("09:00"), EndTime: str("09:15"),
		PatientID: "220000", PatientName: "Jane Doe", FirstName: "Jane", LastName: "Doe",
		DateOfBirth: str("1988-03-03"), Gender: "F", Modality: "CT", StudyDescription: "CT head",
		ClinicalInfo: "headache", DoctorName: "Dr Who", ClinicName: "Clinic", Priority: "URGENT",
		ReportNeededBy: &due, StudyInstanceUID: "1.2.3",
		RadiologistUser: &qubs.UserSummary{Username: "rad", FirstName: "Ra", Initials: "RD", LastName: "Dio", Role: "radiologist"},
		ServiceItems:    []qubs.ServiceItem{qubs.ServiceItem(`{"code":"56001"}`), qubs.ServiceItem(`{"code":"56007"}`)},
	}
}

// clone copies a deeply, through its JSON (every field has one).
func clone(t *testing.T, a qubs.Appointment) qubs.Appointment {
	b, err := json.Marshal(a)
	require.NoError(t, err)
	var c qubs.Appointment
	require.NoError(t, json.Unmarshal(b, &c))
	return c
}

// TestDigestCoversEveryField changes each field of a full appointment
// in every way that changes its JSON, one at a time, and wants a new
// digest each time. A field of a kind it does not know fails the test, so
// that a field added to qubs.Appointment is added to digest too.
func TestDigestCoversEveryField(t *testing.T) {
	base := fullAppointment()
	want := digest(&base)
	same := clone(t, base)
	require.Equal(t, want, digest(&same), "an equal appointment, one digest")
	other := *same.ReportNeededBy
	other = other.In(time.FixedZone("same offset, other name", 11*3600))
	same.ReportNeededBy = &other
	assert.Equal(t, want, digest(&same), "the zone's name is not in the JSON")

	changes := 0
	check := func(name string, mutate func(v reflect.Value)) {
		t.Helper()
		a := clone(t, base)
		mutate(reflect.ValueOf(&a).Elem())
		assert.NotEqual(t, want, digest(&a), name)
		changes++
	}
	typ := reflect.TypeFor[qubs.Appointment]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		field := func(v reflect.Value) reflect.Value { return v.Field(i) }
		switch {
		case f.Type.Kind() == reflect.String:
			check(f.Name, func(v reflect.Value) { field(v).SetString(field(v).String() + "x") })
		case f.Type == reflect.TypeFor[*string]():
			check(f.Name+" nil", func(v reflect.Value) { field(v).SetZero() })
			check(f.Name+" empty", func(v reflect.Value) { field(v).Elem().SetString("") })
			check(f.Name+" changed", func(v reflect.Value) { field(v).Elem().SetString(field(v).Elem().String() + "x") })
		case f.Type == reflect.TypeFor[*time.Time]():
			check(f.Name+" nil", func(v reflect.Value) { field(v).SetZero() })
			check(f.Name+" a nanosecond later", func(v reflect.Value) {
				field(v).Set(reflect.ValueOf(new(field(v).Interface().(*time.Time).Add(time.Nanosecond))))
			})
			check(f.Name+" same instant, other offset", func(v reflect.Value) {
				field(v).Set(reflect.ValueOf(new(field(v).Interface().(*time.Time).UTC())))
			})
		case f.Type == reflect.TypeFor[*qubs.UserSummary]():
			check(f.Name+" nil", func(v reflect.Value) { field(v).SetZero() })
			ut := f.Type.Elem()
			for j := range ut.NumField() {
				require.Equal(t, reflect.String, ut.Field(j).Type.Kind(), "UserSummary.%s: a kind this test does not know", ut.Field(j).Name)
				check(f.Name+"."+ut.Field(j).Name, func(v reflect.Value) {
					s := field(v).Elem().Field(j)
					s.SetString(s.String() + "x")
				})
			}
		case f.Type == reflect.TypeFor[[]qubs.ServiceItem]():
			check(f.Name+" nil", func(v reflect.Value) { field(v).SetZero() })
			check(f.Name+" one fewer", func(v reflect.Value) { field(v).SetLen(1) })
			check(f.Name+" an item changed", func(v reflect.Value) {
				field(v).Index(1).SetBytes([]byte(`{"code":"56008"}`))
			})
			check(f.Name+" items swapped", func(v reflect.Value) {
				a, b := field(v).Index(0).Bytes(), field(v).Index(1).Bytes()
				field(v).Index(0).SetBytes(b)
				field(v).Index(1).SetBytes(a)
			})
		default:
			t.Fatalf("Appointment.%s (%s): a kind digest and this test do not know; add it to both", f.Name, f.Type)
		}
	}
	t.Logf("%d changes, each a new digest", changes)
}

// TestDigestAgreesWithJSON: over a simulated worklist, two appointments
// share a digest exactly when their JSON (what a row keeps) is the same.
func TestDigestAgreesWithJSON(t *testing.T) {
	sim := qubssim.New(qubssim.Options{Seed: 3, Appointments: 400})
	byJSON := map[string][32]byte{}
	byDigest := map[[32]byte]string{}
	for _, domain := range sim.Domains() {
		for _, id := range sim.PendingIDs(domain) {
			a, ok := sim.Appointment(domain, id)
			require.True(t, ok)
			b, err := json.Marshal(a)
			require.NoError(t, err)
			d := digest(&a)
			if prev, ok := byJSON[string(b)]; ok {
				assert.Equal(t, prev, d)
			}
			if prev, ok := byDigest[d]; ok {
				assert.Equal(t, prev, string(b))
			}
			byJSON[string(b)], byDigest[d] = d, string(b)
		}
	}
	require.Greater(t, len(byDigest), 300)
}

// BenchmarkDigest is what Saw pays per read to find an appointment
// unchanged: the digest, against the JSON encoding and hash it replaced.
func BenchmarkDigest(b *testing.B) {
	a := fullAppointment()
	b.Run("digest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = digest(&a)
		}
	})
	b.Run("json+sha256", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			j, _ := json.Marshal(&a)
			_ = sha256.Sum256(j)
		}
	})
}
