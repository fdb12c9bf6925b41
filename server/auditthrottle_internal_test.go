package server

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

func TestThrottleAuditWindows(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var emitted []*store.AuditRecord
	ta := newThrottleAudit(func(r *store.AuditRecord) { mu.Lock(); emitted = append(emitted, r); mu.Unlock() })
	clock := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	ta.now = func() time.Time { return clock }
	first := &store.AuditRecord{ID: "first", AgentID: "ris", EntityRefs: []string{"ServiceRequest/1"}}

	assert.True(t, ta.admit("ris", first), "the first 429 of a minute is recorded as itself")
	for range 5 {
		clock = clock.Add(time.Second)
		assert.False(t, ta.admit("ris", &store.AuditRecord{}))
	}
	assert.True(t, ta.admit("pacs", &store.AuditRecord{}), "each client has its own window")
	ta.summarise("ris") // what the timer does when the minute ends
	require.Len(t, emitted, 1)
	s := emitted[0]
	assert.Empty(t, s.ID, "a new record")
	assert.Equal(t, "ris", s.AgentID)
	assert.Empty(t, s.EntityRefs)
	assert.Contains(t, s.OutcomeDesc, "5 more throttled requests")
	assert.Equal(t, clock, s.Recorded)

	clock = clock.Add(time.Minute)
	assert.True(t, ta.admit("ris", &store.AuditRecord{}), "a new minute starts with a record of its own")
	assert.False(t, ta.admit("ris", &store.AuditRecord{}))
	ta.flush()
	assert.Len(t, emitted, 2, "shutdown records what was counted")
}
