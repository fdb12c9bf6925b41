package delivery

import (
	"container/list"
	"sync"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// Default bounds of Held. A report's artifacts are held from its
// acceptance until a worker of this process claims it, which is at once
// unless every worker is busy: a few milliseconds. The bounds matter when
// it is not this process that claims it (another replica's worker was
// quicker) or when the workers fall behind a burst.
const (
	// DefaultHeldMaxBytes is a dozen of the largest uploads QUBS accepts
	// (a burst of eight 2 MiB reports fits, with room); beyond it the
	// oldest are let go, and read back from the store as before.
	DefaultHeldMaxBytes = 24 << 20
	// DefaultHeldMaxAge is far longer than a claim waits on idle workers,
	// short enough that bytes another replica delivered are not kept long.
	DefaultHeldMaxAge = 30 * time.Second
)

// Held keeps the bytes of the artifacts of report versions this process
// has just stored, so that the worker delivering one takes them from
// memory (Take, a store.Held) instead of reading back what the request
// wrote a moment ago: on PostgreSQL 2 MiB in 263 rows, on SQLite a file,
// each a second copy of the bytes in the heap. The store stays the
// record: a version this process did not store, or let go, or claims
// again after a failed attempt, is read from it.
//
// The bytes are the request's own buffers (fhir.InlineData.Data, or a
// Binary's read from the store), which nothing writes to once the version
// is stored; Held does not hash them again. What it checks is that they
// belong to the row the claim read: the same domain, report, version and
// index, and the size and SHA-256 the store recorded for that row. Its
// bounds count the buffers' capacity, which can exceed their length.
// The zero value is ready to use; a nil *Held holds nothing.
type Held struct {
	// MaxBytes and MaxAge bound what is held; 0 means DefaultHeldMaxBytes
	// and DefaultHeldMaxAge.
	MaxBytes int64
	MaxAge   time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	entries map[heldKey]*list.Element
	order   list.List // of *heldEntry, oldest first
	bytes   int64
	timer   *time.Timer
}

type heldKey struct {
	domain, reportID string
	version, index   int
}

type heldEntry struct {
	key    heldKey
	sha256 string
	data   []byte
	at     time.Time
}

// held is what e keeps in memory: its buffer's capacity, which the
// request's decoder sized for the rest of the body.
func (e *heldEntry) held() int64 { return int64(cap(e.data)) }

// Put holds the bytes of r's artifacts. r must be a version the store has
// just committed: CreateReport and UpdateReport set its Version and its
// artifacts' Index, Size and SHA256, which key and check the bytes. Its
// artifacts' Data must not be changed afterwards.
func (h *Held) Put(r *store.Report) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	for i := range r.Artifacts {
		a := &r.Artifacts[i]
		e := &heldEntry{key: heldKey{r.Domain, r.ID, r.Version, a.Index}, sha256: a.SHA256, data: a.Data, at: now}
		if a.Data == nil || int64(len(a.Data)) != a.Size || a.SHA256 == "" || e.held() > h.maxBytes() {
			continue
		}
		h.remove(e.key)
		if h.entries == nil {
			h.entries = make(map[heldKey]*list.Element)
		}
		h.entries[e.key] = h.order.PushBack(e)
		h.bytes += e.held()
	}
	h.evict(now)
	if h.order.Len() > 0 && h.timer == nil {
		// Bytes no claim takes are let go after MaxAge even when nothing
		// else happens.
		h.timer = time.AfterFunc(h.maxAge(), h.expire)
	}
}

// Take returns the bytes held for artifact a of a version and lets them
// go, or nil when none are held or they are not those of a's row: another
// size or SHA-256 than the store recorded. It is a store.Held.
func (h *Held) Take(domain, reportID string, version int, a *store.Artifact) []byte {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	k := heldKey{domain, reportID, version, a.Index}
	el, ok := h.entries[k]
	if !ok {
		return nil
	}
	e := el.Value.(*heldEntry)
	h.remove(k)
	if int64(len(e.data)) != a.Size || e.sha256 != a.SHA256 {
		return nil
	}
	return e.data
}

// Len and Bytes are how many artifacts are held, and the memory their
// buffers take.
func (h *Held) Len() int {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.entries)
}

func (h *Held) Bytes() int64 {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bytes
}

func (h *Held) maxBytes() int64 {
	if h.MaxBytes > 0 {
		return h.MaxBytes
	}
	return DefaultHeldMaxBytes
}

func (h *Held) maxAge() time.Duration {
	if h.MaxAge > 0 {
		return h.MaxAge
	}
	return DefaultHeldMaxAge
}

func (h *Held) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Held) remove(k heldKey) {
	el, ok := h.entries[k]
	if !ok {
		return
	}
	h.bytes -= el.Value.(*heldEntry).held()
	h.order.Remove(el)
	delete(h.entries, k)
}

// evict lets the oldest go while there are too many bytes or they are too
// old.
func (h *Held) evict(now time.Time) {
	for el := h.order.Front(); el != nil; el = h.order.Front() {
		e := el.Value.(*heldEntry)
		if h.bytes <= h.maxBytes() && now.Sub(e.at) < h.maxAge() {
			return
		}
		h.remove(e.key)
	}
}

// expire is Put's timer: it lets go what is too old, and runs again while
// anything is held.
func (h *Held) expire() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.evict(h.now())
	h.timer = nil
	if el := h.order.Front(); el != nil {
		h.timer = time.AfterFunc(max(0, h.maxAge()-h.now().Sub(el.Value.(*heldEntry).at)), h.expire)
	}
}
