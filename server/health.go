package server

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// DefaultReadinessInterval is how long one real QUBS call answers for
// readiness: probes come every few seconds from every load balancer, and
// each must not become a QUBS call.
const DefaultReadinessInterval = 10 * time.Second

// healthz answers while the process is up; it checks nothing else so an
// orchestrator does not restart the bridge because QUBS is down.
func (s *Server) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// readyz answers 200 only when QUBS answers and the store answers, so a
// load balancer sends no traffic to a replica that cannot reach either.
func (s *Server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 10*time.Second)
	defer cancel()
	checks := gin.H{}
	status := http.StatusOK
	if err := s.upstream.check(ctx, s); err != nil {
		checks["qubs"] = "unavailable"
		status = http.StatusServiceUnavailable
		s.log.Warn("readiness: QUBS unavailable", "correlation_id", correlationIDOf(c),
			"qubs_kind", qubs.KindOf(err).String(), "error", err.Error())
	} else {
		checks["qubs"] = "ok"
	}
	if s.cfg.Store != nil {
		if err := s.cfg.Store.Ping(ctx); err != nil {
			checks["store"] = "unavailable"
			status = http.StatusServiceUnavailable
			s.log.Warn("readiness: store unavailable", "correlation_id", correlationIDOf(c), "error", err.Error())
		} else {
			checks["store"] = "ok"
			// Informational: a queue that only grows means QUBS refuses
			// or is unreachable; it does not make the replica unready.
			// Counted at most once per readiness interval, like the QUBS
			// check: anyone can probe /readyz, and these are aggregates.
			if pending, doms, ok := s.deliveryFigures.get(ctx, s); ok {
				checks["deliveries_pending"] = pending
				checks["deliveries"] = doms
			}
			// Informational too: records waiting for the audit writer; a
			// full buffer makes requests wait (docs/store.md).
			checks["audit_pending"] = s.auditor.backlog()
		}
	}
	state := "ok"
	if status != http.StatusOK {
		state = "unavailable"
	}
	c.JSON(status, gin.H{"status": state, "checks": checks})
}

// upstreamCheck is the last real answer to "does QUBS answer", reused for
// an interval. A token alone proves little: it is cached for up to an
// hour, and QUBS's API can be down while it is still good.
type upstreamCheck struct {
	mu       sync.Mutex // held across the call: one QUBS call per interval, however many probes
	interval time.Duration
	at       time.Time
	err      error
}

// check makes one API call (a get of an appointment that cannot exist, in
// a domain the bridge reaches if it knows one) unless one was made within
// the interval. Any answer QUBS gives about the request (found, not found,
// not in the token's domains) means it is up; a refused token, 5xx, 429,
// or no answer means it is not.
func (u *upstreamCheck) check(ctx context.Context, s *Server) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.at.IsZero() && time.Since(u.at) < u.interval {
		return u.err
	}
	domain := s.domains.anyReachable()
	if domain == "" {
		domain = "qubs-fhir-bridge-readiness"
	}
	// On its own clock: the answer is shared by every probe for an
	// interval, so a caller that hangs up must not make it "unavailable".
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := s.cfg.QUBS.GetPending(ctx, domain, domainProbeID)
	switch qubs.KindOf(err) {
	case qubs.KindNotFound, qubs.KindForbidden:
		err = nil
	}
	u.at, u.err = time.Now(), err
	return err
}

// deliveryFigures caches what /readyz says of the delivery queue, per
// domain: what waits, how long the oldest has waited (a queue that drains
// slowly shows there before the count grows), and what failed for good.
// No PHI: counts and ages.
type deliveryFigures struct {
	mu      sync.Mutex
	at      time.Time
	pending int
	doms    gin.H
	ok      bool
}

func (f *deliveryFigures) get(ctx context.Context, s *Server) (int, gin.H, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.at.IsZero() && time.Since(f.at) < s.cfg.ReadinessInterval {
		return f.pending, f.doms, f.ok
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	n, err := s.cfg.Store.PendingDeliveries(ctx)
	stats, err2 := s.cfg.Store.DeliveryStats(ctx)
	f.at, f.ok = time.Now(), err == nil && err2 == nil
	if !f.ok {
		return 0, nil, false
	}
	doms := gin.H{}
	for _, d := range stats {
		e := gin.H{"pending": d.Pending, "failed": d.Failed, "oldest_pending_age_seconds": 0}
		if d.OldestPending != nil {
			e["oldest_pending_age_seconds"] = max(0, int64(time.Since(*d.OldestPending).Seconds()))
		}
		doms[d.Domain] = e
	}
	f.pending, f.doms = n, doms
	return n, doms, true
}
