package auth

import (
	"context"
	"sync"
	"time"
)

// ReplayCache remembers the jti of every client assertion until it
// expires, so that a captured assertion cannot be used twice (SMART Backend
// Services: "the authorization server SHALL ... check that the jti value
// has not been previously encountered for the given iss within the maximum
// allowed authentication JWT lifetime"). With several replicas the cache
// must be shared: the store provides a persistent implementation.
type ReplayCache interface {
	// ClaimJTI records (issuer, jti) until expires. fresh is true if the
	// pair was not recorded yet (or its record has expired), false if it
	// is a replay. An error means the cache could not answer; the token
	// endpoint then refuses the request rather than risk a replay.
	ClaimJTI(ctx context.Context, issuer, jti string, expires time.Time) (fresh bool, err error)
}

// NewMemoryReplayCache returns an in-process ReplayCache. It is right for
// a single replica only: another replica would not see its records.
func NewMemoryReplayCache() ReplayCache { return newMemoryReplayCache(time.Now) }

func newMemoryReplayCache(now func() time.Time) *memoryReplay {
	return &memoryReplay{now: now, seen: map[string]time.Time{}}
}

type memoryReplay struct {
	now func() time.Time

	mu        sync.Mutex
	seen      map[string]time.Time
	nextPurge time.Time
}

// purgeEvery spaces out the sweeps of expired records: the map holds at
// most the assertions of the last few minutes, so a sweep is cheap, but
// there is no need to do it on every call.
const purgeEvery = time.Minute

// ClaimJTI implements ReplayCache.
func (m *memoryReplay) ClaimJTI(ctx context.Context, issuer, jti string, expires time.Time) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	// NUL cannot occur in a JSON string that went through our checks of
	// client ids, so the key is unambiguous.
	key := issuer + "\x00" + jti
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if now.After(m.nextPurge) {
		for k, exp := range m.seen {
			if !now.Before(exp) {
				delete(m.seen, k)
			}
		}
		m.nextPurge = now.Add(purgeEvery)
	}
	if exp, ok := m.seen[key]; ok && now.Before(exp) {
		return false, nil
	}
	m.seen[key] = expires
	return true, nil
}
