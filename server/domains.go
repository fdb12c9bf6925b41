package server

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
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
}

type domainEntry struct {
	reachable bool
	until     time.Time
}

func newDomains() *domains {
	return &domains{entries: map[string]domainEntry{}, now: time.Now}
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
		for k, e := range d.entries {
			if !e.reachable {
				delete(d.entries, k)
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

// errNoDomain is the answer for a domain the bridge's credentials do not
// reach; the same whether the domain exists in QUBS for someone else or not
// at all.
func errNoDomain() error {
	return fhir.Errorf(http.StatusNotFound, "not-found", "no FHIR base for this domain")
}

// knownDomain answers 404 for a domain QUBS does not let the bridge reach.
// It runs after authentication and the rate limit: a caller may make the
// bridge probe only domains its token names, at the rate it is allowed.
// When QUBS cannot be asked (down, slow), the request goes on: the
// handlers' own QUBS calls report that, and answers from the store stay
// available.
func (s *Server) knownDomain() gin.HandlerFunc {
	return func(c *gin.Context) {
		d := domainOf(c)
		reachable, known := s.domains.lookup(d)
		if !known {
			ctx, cancel := context.WithTimeout(c.Request.Context(), 5*time.Second)
			_, err := s.cfg.QUBS.GetPending(ctx, d, domainProbeID)
			cancel()
			switch {
			case err == nil, qubs.KindOf(err) == qubs.KindNotFound:
				reachable, known = true, true
				s.domains.record(d, true)
			case qubs.KindOf(err) == qubs.KindForbidden:
				reachable, known = false, true
				s.domains.record(d, false)
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
