package server

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// How long the answer to "does the bridge reach this QUBS domain" is kept.
// A domain added to the bridge's QUBS credentials shows up within
// unknownDomainTTL; one removed is noticed at the next QUBS call anyway.
const (
	knownDomainTTL   = 10 * time.Minute
	unknownDomainTTL = time.Minute
	// maxDomainEntries bounds the memory a caller sending made-up domain
	// names can use; past it the unknown ones are forgotten.
	maxDomainEntries = 1024
	// domainProbeID is the appointment the probe asks for. QUBS checks the
	// token's domain scope before it looks the appointment up (403 before
	// 404), so any id tells the two apart; this one cannot exist.
	domainProbeID = "qubs-fhir-bridge-domain-probe"
)

// domains remembers which QUBS domains the bridge's credentials reach. QUBS
// lists none: "your bearer token is scoped to one or more domains and
// requests outside that scope are rejected" (403). So a FHIR base exists
// for a domain exactly when QUBS does not answer 403 for it; the bridge
// learns that from its own QUBS calls, or from one cheap probe for routes
// that do not call QUBS (metadata, the stored DiagnosticReports, the audit
// trail), so that /fhir/nope/... is a 404 everywhere.
type domains struct {
	mu      sync.Mutex
	entries map[string]domainEntry
	now     func() time.Time
	// probes makes concurrent probes of one domain one QUBS call; anon
	// is the budget of probes for unauthenticated requests.
	probes singleflight.Group
	anon   *rate.Limiter
}

type domainEntry struct {
	reachable bool
	until     time.Time
}

func newDomains() *domains {
	return &domains{entries: map[string]domainEntry{}, now: time.Now, anon: rate.NewLimiter(anonProbeRate, anonProbeBurst)}
}

// lookup reports whether the domain is reachable, if that is known.
func (d *domains) lookup(domain string) (reachable, known bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.entries[domain]
	if !ok || d.now().After(e.until) {
		return false, false
	}
	return e.reachable, true
}

func (d *domains) record(domain string, reachable bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.entries) >= maxDomainEntries {
		// Expired entries first; only if that is not enough, the
		// unreachable ones (a flood of made-up names), never the
		// reachable ones the bridge serves.
		now := d.now()
		for k, e := range d.entries {
			if now.After(e.until) {
				delete(d.entries, k)
			}
		}
		if len(d.entries) >= maxDomainEntries {
			for k, e := range d.entries {
				if !e.reachable {
					delete(d.entries, k)
				}
			}
		}
	}
	ttl := knownDomainTTL
	if !reachable {
		ttl = unknownDomainTTL
	}
	d.entries[domain] = domainEntry{reachable: reachable, until: d.now().Add(ttl)}
}

// anyReachable returns a domain known to be reachable, "" if none is.
func (d *domains) anyReachable() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	for k, e := range d.entries {
		if e.reachable && now.Before(e.until) {
			return k
		}
	}
	return ""
}

type probeResult int

const (
	probeUnknown probeResult = iota // QUBS could not be asked
	probeReachable
	probeUnreachable
)

// anonProbeRate bounds the domain probes of unauthenticated requests,
// across all callers: a burst of a few, then one a second.
const (
	anonProbeRate  = 1
	anonProbeBurst = 5
)

// errNoDomain is the answer for a domain the bridge's credentials do not
// reach; the same whether the domain exists in QUBS for someone else or not
// at all.
func errNoDomain() error {
	return fhir.Errorf(http.StatusNotFound, "not-found", "no FHIR base for this domain")
}

// knownDomain answers 404 for a domain QUBS does not let the bridge reach.
// It runs after authentication and the rate limit: an authenticated caller
// may make the bridge probe only domains its token names, at the rate it
// is allowed. The public routes (metadata, the SMART discovery document)
// have no caller to charge, so their probes share one small budget
// (anonProbeRate) and concurrent probes of one domain are one: made-up
// domain names cannot spend the bridge's QUBS quota (past the budget, the
// public document is served without the check). When QUBS cannot be
// asked (down, slow), the request goes on: the handlers' own QUBS calls
// report that, and answers from the store stay available.
func (s *Server) knownDomain() gin.HandlerFunc {
	return func(c *gin.Context) {
		d := domainOf(c)
		reachable, known := s.domains.lookup(d)
		if !known && s.indexedRecently(c, d) {
			// A complete walk of the worklist index proved the domain
			// reachable: an indexed search stays free of QUBS calls.
			s.domains.record(d, true)
			reachable, known = true, true
		}
		if !known {
			if principalOf(c) == nil && !s.domains.anon.Allow() {
				// Over the budget the public document is served
				// unchecked: it discloses nothing, and a flood of
				// made-up names must not turn the real bases' metadata
				// away. Only under such a flood does a made-up base
				// answer 200 rather than 404.
				s.cfg.Metrics.Refused(observe.RefusedAnonymous)
				c.Next()
				return
			}
			v, _, _ := s.domains.probes.Do(d, func() (any, error) {
				// On its own clock: the answer is shared and remembered,
				// so one caller hanging up must not decide it.
				ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 5*time.Second)
				defer cancel()
				_, err := s.cfg.QUBS.GetPending(ctx, d, domainProbeID)
				switch {
				case err == nil, qubs.KindOf(err) == qubs.KindNotFound:
					s.domains.record(d, true)
					return probeReachable, nil
				case qubs.KindOf(err) == qubs.KindForbidden:
					s.domains.record(d, false)
					return probeUnreachable, nil
				}
				return probeUnknown, nil
			})
			switch v.(probeResult) {
			case probeReachable:
				reachable, known = true, true
			case probeUnreachable:
				reachable, known = false, true
			}
		}
		if known && !reachable {
			s.renderError(c, errNoDomain())
			c.Abort()
			return
		}
		c.Next()
	}
}
