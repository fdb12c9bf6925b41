package qubssim

import (
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// Fault makes matching requests misbehave. Faults are tried in the order
// they were added; the first one that matches and has uses left applies.
type Fault struct {
	// Method matches the request method; "" matches any.
	Method string
	// Route is a substring of the request path, e.g. "/report",
	// "/pending", "/oauth2/token", "/presigned/"; "" matches any.
	Route string
	// Count is how many matching requests the fault affects; 0 means
	// every one until ClearFaults.
	Count int
	// Status, when not 0, answers this status with a problem body.
	Status int
	// RetryAfter is the Retry-After header sent with Status
	// (delta-seconds or HTTP-date); optional.
	RetryAfter string
	// Latency delays the request before it is handled; the wait ends early
	// when the client gives up.
	Latency time.Duration
	// Drop closes the connection without answering.
	Drop bool
	// AfterHandling applies Drop or Status after the real handler ran and
	// its effects were committed: a lost response.
	AfterHandling bool
	// Rate is the share of matching requests the fault applies to, drawn
	// at random per request (a request it spares looks at the next fault);
	// 0 and 1 mean every one. Chaos tests use it for "20 % of writes".
	Rate float64
}

type faultState struct {
	Fault
	left int // uses left; meaningful when Count > 0
}

// AddFault adds a fault.
func (s *Sim) AddFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &faultState{Fault: f, left: f.Count})
}

// ClearFaults removes every fault.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Faults returns the active faults, with Count showing the uses left.
func (s *Sim) Faults() []Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Fault, 0, len(s.faults))
	for _, f := range s.faults {
		ff := f.Fault
		if f.Count > 0 {
			ff.Count = f.left
		}
		out = append(out, ff)
	}
	return out
}

// takeFault returns the fault that applies to r, using one of its uses, or
// nil.
func (s *Sim) takeFault(r *http.Request) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.Method != "" && !strings.EqualFold(f.Method, r.Method) {
			continue
		}
		if f.Route != "" && !strings.Contains(r.URL.Path, f.Route) {
			continue
		}
		if f.Rate > 0 && f.Rate < 1 && rand.Float64() >= f.Rate {
			continue
		}
		if f.Count > 0 {
			f.left--
			if f.left <= 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		ff := f.Fault
		return &ff
	}
	return nil
}
