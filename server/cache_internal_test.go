package server

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

func TestResourceCacheDerived(t *testing.T) {
	c := newResourceCache(time.Minute, 100)
	a := &qubs.Appointment{AppointmentID: "A1"}
	c.putDerived("acme", &mapping.Mapped{PatientID: "p1", ReferrerID: "r1", ClinicID: "c1"}, a)
	for _, k := range []struct{ typ, id string }{{"Patient", "p1"}, {"Practitioner", "r1"}, {"Organization", "c1"}} {
		got, ok := c.get("acme", k.typ, k.id)
		if assert.True(t, ok, k) {
			assert.Equal(t, "A1", got.AppointmentID)
			assert.NotSame(t, a, got, "a copy")
		}
	}
	for _, k := range []struct{ domain, typ, id string }{
		{"acme", "Practitioner", "p1"}, {"acme", "Patient", "r1"}, {"other", "Patient", "p1"},
		{"acme", "ServiceRequest", "p1"}, {"acme", "Practitioner", ""},
	} {
		_, ok := c.get(k.domain, k.typ, k.id)
		assert.False(t, ok, k)
	}
}

// BenchmarkPutDerived is the resource cache's share of mapping a
// worklist entry: the derived ids of 1,200 appointments put again and
// again, as a walk of the worklist puts them.
func BenchmarkPutDerived(b *testing.B) {
	c := newResourceCache(time.Hour, 50_000)
	var ms []mapping.Mapped
	for i := range 1200 {
		n := strconv.Itoa(i)
		ms = append(ms, mapping.Mapped{PatientID: "P" + n, ReferrerID: "h-referrer" + strconv.Itoa(i%300),
			RadiologistID: "rad" + strconv.Itoa(i%20), ClinicID: "h-clinic" + strconv.Itoa(i%40)})
	}
	a := &qubs.Appointment{AppointmentID: "A1"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.putDerived("acme", &ms[i%len(ms)], a)
		i++
	}
}
