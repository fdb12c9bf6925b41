package sqlstore

import (
	"sync"
	"time"
)

// resourceCache keeps the ServiceRequests of worklist rows in memory, so
// that a page served from the index reads only the narrow index rows:
// looking up and copying each row's content was half of a page's store
// CPU on SQLite (BenchmarkSearchWorklistPage). An entry is used only
// when the row's digest and last_updated are those it was read with:
// every write of a row's content changes one of them (a change its
// digest, an arrival its last_updated), so a cached ServiceRequest is
// never older than the row it answers for, on any replica. It holds PHI
// in memory only, as the process does while serving it.
type resourceCache struct {
	mu      sync.Mutex
	entries map[resourceKey]cachedResource
	bytes   int
	limit   int
}

type resourceKey struct{ domain, appointmentID string }

type cachedResource struct {
	digest      string
	lastUpdated time.Time
	resource    []byte
}

// resourceCacheLimit bounds the cache: about 40,000 ServiceRequests.
const resourceCacheLimit = 64 << 20

// get returns the cached resource of a row if it is current. The bytes
// are shared: callers must not change them.
func (c *resourceCache) get(domain, appointmentID, digest string, lastUpdated time.Time) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[resourceKey{domain, appointmentID}]
	if !ok || e.digest != digest || !e.lastUpdated.Equal(lastUpdated) {
		return nil, false
	}
	return e.resource, true
}

// put keeps a row's resource (which it must not change afterwards). Past
// the limit, arbitrary entries go (Go's map order): what is asked again
// comes back with the next page that needs it.
func (c *resourceCache) put(domain, appointmentID, digest string, lastUpdated time.Time, resource []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[resourceKey]cachedResource{}
		if c.limit == 0 {
			c.limit = resourceCacheLimit
		}
	}
	k := resourceKey{domain, appointmentID}
	if old, ok := c.entries[k]; ok {
		c.bytes -= len(old.resource)
	}
	c.entries[k] = cachedResource{digest: digest, lastUpdated: lastUpdated, resource: resource}
	c.bytes += len(resource)
	for k, e := range c.entries {
		if c.bytes <= c.limit {
			break
		}
		delete(c.entries, k)
		c.bytes -= len(e.resource)
	}
}

// drop forgets the rows of a domain that left or were purged: not needed
// for correctness (a row that comes back has a new last_updated), only to
// give the memory back.
func (c *resourceCache) drop(domain string, appointmentIDs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range appointmentIDs {
		k := resourceKey{domain, id}
		if e, ok := c.entries[k]; ok {
			delete(c.entries, k)
			c.bytes -= len(e.resource)
		}
	}
}
