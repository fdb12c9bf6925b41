package server

import (
	"sync"
	"time"

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
	entries map[string]cacheEntry
}

type cacheEntry struct {
	appt    qubs.Appointment
	expires time.Time
}

func newResourceCache(ttl time.Duration, max int) *resourceCache {
	return &resourceCache{ttl: ttl, max: max, now: time.Now, entries: make(map[string]cacheEntry)}
}

func cacheKey(domain, typ, id string) string { return domain + "/" + typ + "/" + id }

func (c *resourceCache) get(domain, typ, id string) (qubs.Appointment, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[cacheKey(domain, typ, id)]
	if !ok || c.now().After(e.expires) {
		return qubs.Appointment{}, false
	}
	return e.appt, true
}

func (c *resourceCache) put(domain, typ, id string, a *qubs.Appointment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
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
	c.entries[cacheKey(domain, typ, id)] = cacheEntry{appt: *a, expires: now.Add(c.ttl)}
}
