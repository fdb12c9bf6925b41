package qubssim_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

func TestParseChurnRate(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]float64{"": 0, "off": 0, "0": 0, "2/s": 2, "30/m": 0.5, "360/h": 0.1, "0.5/s": 0.5} {
		got, err := qubssim.ParseChurnRate(in)
		require.NoError(t, err, in)
		assert.InDelta(t, want, got, 1e-9, in)
	}
	for _, bad := range []string{"5", "5/d", "-1/s", "x/s", "NaN/s", "Inf/s"} {
		_, err := qubssim.ParseChurnRate(bad)
		assert.Error(t, err, bad)
	}
}

// TestChurnIsDeterministic: two simulators with one seed make the same
// events, and each event does to the worklist what it says.
func TestChurnIsDeterministic(t *testing.T) {
	t.Parallel()
	a := qubssim.New(qubssim.Options{Seed: 7, Appointments: 200})
	b := qubssim.New(qubssim.Options{Seed: 7, Appointments: 200})
	before := map[string]bool{}
	for _, id := range a.PendingIDs("acme") {
		before[id] = true
	}
	evA, evB := a.ChurnStep(300), b.ChurnStep(300)
	strip := func(evs []qubssim.ChurnEvent) []qubssim.ChurnEvent {
		for i := range evs {
			evs[i].At = time.Time{}
		}
		return evs
	}
	assert.Equal(t, strip(evA), strip(evB))
	kinds := map[string]int{}
	for _, ev := range evA {
		kinds[ev.Kind]++
	}
	assert.Positive(t, kinds[qubssim.ChurnArrived])
	assert.Positive(t, kinds[qubssim.ChurnLeft])
	assert.Positive(t, kinds[qubssim.ChurnChanged])
	assert.Equal(t, a.PendingIDs("acme"), b.PendingIDs("acme"))

	// The last event on each appointment decides whether it is pending.
	last := map[string]string{}
	for _, ev := range evA {
		if ev.Domain == "acme" {
			last[ev.AppointmentID] = ev.Kind
		}
	}
	for id, kind := range last {
		appt, ok := a.Appointment("acme", id)
		require.True(t, ok)
		switch kind {
		case qubssim.ChurnLeft:
			assert.Equal(t, qubs.StatusAuthorised, appt.Status, id)
		default:
			assert.Equal(t, qubs.StatusPendingReporting, appt.Status, id)
			assert.NotEmpty(t, appt.PatientName)
		}
	}
	st := a.ChurnStats()
	assert.Equal(t, 300, st.Events)
	assert.Equal(t, st.Events, st.Arrived+st.Left+st.Changed)
}

// TestChurnFollowsTheClock: at a rate, the events due by the simulator's
// clock are applied on the next request.
func TestChurnFollowsTheClock(t *testing.T) {
	t.Parallel()
	clock := qubssim.NewFakeClock(time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC))
	s := qubssim.New(qubssim.Options{Seed: 3, Appointments: 100, Clock: clock, ChurnRate: 2})
	assert.Zero(t, s.ChurnStats().Events)
	clock.Advance(10 * time.Second)
	assert.Equal(t, 20, s.ChurnStats().Events)
	clock.Advance(250 * time.Millisecond)
	clock.Advance(250 * time.Millisecond)
	assert.Equal(t, 21, s.ChurnStats().Events, "fractions add up")
	s.SetChurnRate(0)
	clock.Advance(time.Hour)
	assert.Equal(t, 21, s.ChurnStats().Events, "off is off")
	s.SetChurnRate(1e6)
	clock.Advance(time.Second)
	st := s.ChurnStats()
	assert.Equal(t, 21+10_000, st.Events, "a burst is bounded")
	assert.Equal(t, 1e6-10_000, float64(st.Dropped))
}

func TestChurnAdminAPI(t *testing.T) {
	t.Parallel()
	srv, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Seed: 5, Appointments: 100})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	post := func(path, body string) (int, []byte) {
		res, err := http.Post(srv.URL+path, "application/json", bytes.NewBufferString(body))
		require.NoError(t, err)
		defer res.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(res.Body)
		return res.StatusCode, b.Bytes()
	}
	code, body := post("/_sim/churn/step", `{"events":5}`)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var evs []qubssim.ChurnEvent
	require.NoError(t, json.Unmarshal(body, &evs))
	assert.Len(t, evs, 5)

	code, body = post("/_sim/churn", `{"rate":"30/m"}`)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var st qubssim.ChurnStats
	require.NoError(t, json.Unmarshal(body, &st))
	assert.InDelta(t, 0.5, st.Rate, 1e-9)
	assert.Equal(t, 5, st.Events)

	res, err := http.Get(srv.URL + "/_sim/churn")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)

	for _, bad := range []struct{ path, body string }{
		{"/_sim/churn", `{"rate":"fast"}`}, {"/_sim/churn/step", `{"events":0}`}, {"/_sim/churn/step", `{"evnts":1}`},
	} {
		code, _ := post(bad.path, bad.body)
		assert.Equal(t, http.StatusBadRequest, code, bad)
	}
}
