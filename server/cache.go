package server

import (
	"sync"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// resourceCache remembers, for a short while, which appointment a derived
// resource (Patient, Practitioner, Organization) came from, so that a read
// of an id the bridge just emitted does not walk the whole QUBS worklist.
// It keeps the appointment rather than the encoded resource: searches
// then pay for encoding only what they send. It holds PHI in memory only,
// bounded in time and size.
type resourceCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[cacheKey]cacheEntry
}

// cacheKey is a struct, not a joined string: every worklist entry puts up
// to four keys, and a struct key costs no allocation.
type cacheKey struct{ domain, typ, id string }

// cacheEntry points at one copy of the appointment shared by all the
// resources derived from it, which is read-only from then on.
type cacheEntry struct {
	appt    *qubs.Appointment
	expires time.Time
}

func newResourceCache(ttl time.Duration, max int) *resourceCache {
	return &resourceCache{ttl: ttl, max: max, now: time.Now, entries: make(map[cacheKey]cacheEntry)}
}

// get returns the appointment typ/id came from; the caller must not change
// it.
func (c *resourceCache) get(domain, typ, id string) (*qubs.Appointment, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[cacheKey{domain, typ, id}]
	if !ok || c.now().After(e.expires) {
		return nil, false
	}
	return e.appt, true
}

// putDerived remembers a as the source of every resource m derives from
// it, under one lock and one copy.
func (c *resourceCache) putDerived(domain string, m *mapping.Mapped, a *qubs.Appointment) {
	if m.PatientID == "" && m.ReferrerID == "" && m.RadiologistID == "" && m.ClinicID == "" {
		return
	}
	cp := new(qubs.Appointment)
	*cp = *a
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	e := cacheEntry{appt: cp, expires: now.Add(c.ttl)}
	for _, k := range [...]cacheKey{
		{domain, "Patient", m.PatientID},
		{domain, "Practitioner", m.ReferrerID},
		{domain, "Practitioner", m.RadiologistID},
		{domain, "Organization", m.ClinicID},
	} {
		if k.id != "" {
			c.putLocked(now, k, e)
		}
	}
}

func (c *resourceCache) putLocked(now time.Time, k cacheKey, e cacheEntry) {
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if now.After(e.expires) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= c.max {
			// Still full of live entries: start over rather than track
			// recency; a miss only costs a walk of the worklist.
			clear(c.entries)
		}
	}
	c.entries[k] = e
}
