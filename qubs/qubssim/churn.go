package qubssim

import (
	"encoding/json"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// Churn makes the worklist change over time, as a real practice's does:
// studies arrive on it, leave it (reported elsewhere: AUTHORISED), and
// change while on it (a radiologist assigned or unassigned, the priority
// raised). What happens is deterministic for a Seed: the n-th event is
// the same whatever the rate and whenever it happens.
//
// There is no background goroutine: the events due at the simulator's
// clock are applied when the next API request arrives, so a FakeClock
// drives churn as precisely as it drives expiries, and a simulator nobody
// calls costs nothing.

// Churn event kinds.
const (
	ChurnArrived = "arrived"
	ChurnLeft    = "left"
	ChurnChanged = "changed"
)

// maxChurnCatchUp bounds the events applied at once after a long quiet
// spell; the rest are dropped, not owed (a worklist that turned over
// completely tests nothing more).
const maxChurnCatchUp = 10_000

// ChurnEvent is one change churn made.
type ChurnEvent struct {
	Kind          string    `json:"kind"`
	Domain        string    `json:"domain"`
	AppointmentID string    `json:"appointmentId"`
	At            time.Time `json:"at"`
}

// ChurnStats counts what churn did.
type ChurnStats struct {
	// Rate is the events per second (0: off).
	Rate    float64 `json:"eventsPerSecond"`
	Events  int     `json:"events"`
	Arrived int     `json:"arrived"`
	Left    int     `json:"left"`
	Changed int     `json:"changed"`
	// Dropped counts events not applied because too many were due at
	// once (maxChurnCatchUp).
	Dropped int `json:"dropped"`
}

type churnState struct {
	rate  float64 // events per second
	since time.Time
	owed  float64 // the fraction of an event carried to the next catch-up
	g     *gen
	next  map[string]int // next appointment number per domain
	stats ChurnStats
}

// churnIDs are the formats and first numbers of arriving appointments,
// above every seeded one.
var churnIDs = map[string]struct {
	format string
	start  int
}{"acme": {"A%06d", 900000}, "northside": {"NS-%06d", 900000}, "coastal": {"%07d", 9900000}}

func newChurn(s *Sim, seedValue int64, rate float64) *churnState {
	g := &gen{s: s, rng: mrand.New(mrand.NewPCG(uint64(seedValue), 0xc4a2)), zones: map[string]*time.Location{}}
	for _, sites := range domainSites {
		for _, st := range sites {
			loc, _ := time.LoadLocation(st.tz) // seed loaded every zone already
			g.zones[st.name] = loc
		}
	}
	next := map[string]int{}
	for d, f := range churnIDs {
		next[d] = f.start
	}
	return &churnState{rate: rate, since: s.clock.Now(), g: g, next: next, stats: ChurnStats{Rate: rate}}
}

// ParseChurnRate reads a churn rate: "off", "0" or "" for none, else
// events per second, minute or hour as "N/s", "N/m" or "N/h" (N may be a
// fraction: "0.5/s").
func ParseChurnRate(v string) (float64, error) {
	v = strings.TrimSpace(strings.ToLower(v))
	if v == "" || v == "off" || v == "0" {
		return 0, nil
	}
	num, unit, ok := strings.Cut(v, "/")
	per := map[string]float64{"s": 1, "m": 60, "h": 3600}[unit]
	n, err := strconv.ParseFloat(num, 64)
	if !ok || per == 0 || err != nil || n < 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, fmt.Errorf("churn rate %q: want off or N/s, N/m or N/h", v)
	}
	return n / per, nil
}

// SetChurnRate sets the events per second (0 stops churn). Events owed
// at the old rate are applied first.
func (s *Sim) SetChurnRate(perSecond float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.catchUpLocked()
	s.churn.rate = max(perSecond, 0)
	s.churn.stats.Rate = s.churn.rate
}

// ChurnStep applies n churn events now, whatever the rate.
func (s *Sim) ChurnStep(n int) []ChurnEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ChurnEvent, 0, n)
	for range n {
		out = append(out, s.churnOnce())
	}
	return out
}

// ChurnStats returns what churn did so far.
func (s *Sim) ChurnStats() ChurnStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.catchUpLocked()
	return s.churn.stats
}

// catchUp applies the events due by now.
func (s *Sim) catchUp() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.catchUpLocked()
}

func (s *Sim) catchUpLocked() {
	c := s.churn
	now := s.clock.Now()
	elapsed := now.Sub(c.since).Seconds()
	c.since = now
	if c.rate <= 0 || elapsed <= 0 {
		c.owed = 0
		return
	}
	c.owed += elapsed * c.rate
	n := int(c.owed)
	c.owed -= float64(n)
	if n > maxChurnCatchUp {
		c.stats.Dropped += n - maxChurnCatchUp
		n = maxChurnCatchUp
	}
	for range n {
		s.churnOnce()
	}
}

// churnOnce applies one event. Callers hold s.mu.
func (s *Sim) churnOnce() ChurnEvent {
	c := s.churn
	r := c.g.rng
	dom := "acme"
	switch x := r.IntN(100); {
	case x >= 95:
		dom = "coastal"
	case x >= 85:
		dom = "northside"
	}
	dd := s.domain(dom)
	ev := ChurnEvent{Domain: dom, At: s.clock.Now()}
	kind := r.IntN(100)
	var pending []*apptState
	if kind >= 40 {
		for _, a := range dd.order {
			if a.a.Status == qubs.StatusPendingReporting {
				pending = append(pending, a)
			}
		}
	}
	switch {
	case kind < 40 || len(pending) == 0 || len(dd.order) == 0:
		ev.Kind, ev.AppointmentID = ChurnArrived, s.churnArrival(dd)
	case kind < 80:
		a := pending[r.IntN(len(pending))]
		a.a.Status = qubs.StatusAuthorised
		ev.Kind, ev.AppointmentID = ChurnLeft, a.a.AppointmentID
	default:
		a := pending[r.IntN(len(pending))]
		if a.a.RadiologistUser == nil {
			u := radiologists[r.IntN(len(radiologists))]
			a.a.RadiologistUser = &u
		} else {
			a.a.RadiologistUser = nil
		}
		if r.IntN(2) == 0 {
			a.a.Priority = []string{"Routine", "Urgent", "STAT"}[r.IntN(3)]
		}
		ev.Kind, ev.AppointmentID = ChurnChanged, a.a.AppointmentID
	}
	c.stats.Events++
	switch ev.Kind {
	case ChurnArrived:
		c.stats.Arrived++
	case ChurnLeft:
		c.stats.Left++
	case ChurnChanged:
		c.stats.Changed++
	}
	return ev
}

// churnArrival adds a new pending appointment to dd for a patient the
// domain already knows (a returning patient: new patients would need ids
// that cannot clash with seeded ones), and returns its id.
func (s *Sim) churnArrival(dd *domainData) string {
	c := s.churn
	f := churnIDs[dd.name] // churn picks seeded domains only
	var id string
	for {
		c.next[dd.name]++
		id = fmt.Sprintf(f.format, c.next[dd.name])
		if dd.appts[id] == nil {
			break
		}
	}
	var p patient
	if len(dd.order) > 0 {
		src := dd.order[c.g.rng.IntN(len(dd.order))].a
		p = patient{id: src.PatientID, first: src.FirstName, last: src.LastName, gender: src.Gender, dob: cloneStr(src.DateOfBirth)}
	} else {
		p = patient{first: c.g.pick(firstNames), last: c.g.pick(lastNames)}
	}
	a := c.g.appointment(dd.name, id, p, qubs.StatusPendingReporting)
	dd.add(s, a)
	return id
}

// The admin API of churn.

type churnJSON struct {
	Rate   string `json:"rate,omitempty"`
	Events int    `json:"events,omitempty"`
}

func (s *Sim) handleChurnGet(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.ChurnStats())
}

// handleChurnSet sets the rate: {"rate":"10/m"}.
func (s *Sim) handleChurnSet(w http.ResponseWriter, r *http.Request) {
	var cj churnJSON
	if !s.decodeAdmin(w, r, &cj) {
		return
	}
	rate, err := ParseChurnRate(cj.Rate)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	s.SetChurnRate(rate)
	writeJSON(w, http.StatusOK, s.ChurnStats())
}

// handleChurnStep applies events now: {"events":5}.
func (s *Sim) handleChurnStep(w http.ResponseWriter, r *http.Request) {
	var cj churnJSON
	if !s.decodeAdmin(w, r, &cj) {
		return
	}
	if cj.Events < 1 || cj.Events > maxChurnCatchUp {
		s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("events must be 1..%d", maxChurnCatchUp))
		return
	}
	writeJSON(w, http.StatusOK, s.ChurnStep(cj.Events))
}

func (s *Sim) decodeAdmin(w http.ResponseWriter, r *http.Request, v any) bool {
	d := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		s.problem(w, r, http.StatusBadRequest, "body must be a JSON object: "+err.Error())
		return false
	}
	return true
}
