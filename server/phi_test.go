package server_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// logBuffer collects the bridge's logs of one test.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// phiMarker is part of every report and comment text the tests send.
const phiMarker = "PHIMARKER"

// assertNoPHI fails the test when the bridge's logs hold any patient name,
// date of birth or clinical text of the simulator's pending appointments,
// or a QUBS secret or token. newEnv runs it after every end-to-end test, so
// the whole suite is the proof.
func assertNoPHI(t testing.TB, logs string, sim *qubssim.Server) {
	t.Helper()
	if logs == "" {
		t.Error("the bridge logged nothing: the PHI check would prove nothing")
		return
	}
	check := func(what, s string) {
		if len(s) >= 4 && strings.Contains(logs, s) {
			t.Errorf("bridge logs contain a %s", what)
		}
	}
	check("client secret", qubssim.DefaultClientSecret)
	// Every report and comment text the tests send carries this marker.
	check("report or comment text", phiMarker)
	for _, marker := range []string{"Bearer ", "eyJ", "access_token"} {
		check("token", marker)
	}
	for _, domain := range sim.Domains() {
		for _, id := range sim.AppointmentIDs(domain) {
			a, ok := sim.Appointment(domain, id)
			if !ok {
				continue
			}
			check("patient name", a.PatientName)
			check("first name", a.FirstName)
			check("last name", a.LastName)
			check("clinical info", a.ClinicalInfo)
			if a.DateOfBirth != nil {
				check("date of birth", *a.DateOfBirth)
			}
		}
	}
}
