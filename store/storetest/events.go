package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

func worklistEvent(domain, id, kind string) *store.Event {
	return &store.Event{
		Domain: domain, Topic: store.EventTopicWorklist, Kind: kind,
		FocusType: "ServiceRequest", FocusID: id, AppointmentID: "A-" + id,
		Resource: []byte(`{"resourceType":"ServiceRequest","id":"` + id + `","note":"` + phi + `"}`),
	}
}

func testEvents(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	evs, err := s.EventsAfter(ctx, 0, 10)
	require.NoError(t, err)
	assert.Empty(t, evs)

	a, b := worklistEvent("acme", "sr1", store.EventArrived), worklistEvent("acme", "sr2", store.EventLeft)
	b.At = base
	b.Resource = nil
	require.NoError(t, s.AppendEvents(ctx, a, b))
	assert.Greater(t, a.Seq, int64(0))
	assert.Greater(t, b.Seq, a.Seq)
	assert.False(t, a.At.IsZero(), "At is set when zero")
	c := worklistEvent("other", "sr3", store.EventChanged)
	require.NoError(t, s.AppendEvents(ctx, c))
	assert.Greater(t, c.Seq, b.Seq)

	evs, err = s.EventsAfter(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, evs, 3)
	assert.Equal(t, *a, evs[0])
	assert.Equal(t, base.Truncate(1000), evs[1].At)
	assert.Nil(t, evs[1].Resource)
	assert.Equal(t, "other", evs[2].Domain)

	evs, err = s.EventsAfter(ctx, a.Seq, 1)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	assert.Equal(t, b.Seq, evs[0].Seq)
	evs, err = s.EventsAfter(ctx, c.Seq, 10)
	require.NoError(t, err)
	assert.Empty(t, evs)

	// Retention blanks the resource of events before the cutoff and
	// keeps what happened.
	n, err := s.PurgeBefore(ctx, a.At.Add(time.Microsecond))
	require.NoError(t, err)
	assert.Equal(t, 1, n, "a's resource (b has none; c is newer)")
	evs, err = s.EventsAfter(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, evs, 3)
	assert.Nil(t, evs[0].Resource)
	assert.Equal(t, store.EventArrived, evs[0].Kind)
	assert.NotNil(t, evs[2].Resource)
}

func testEventsInvalid(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for name, e := range map[string]*store.Event{
		"domain": {Topic: "worklist", Kind: "arrived", FocusType: "ServiceRequest", FocusID: "x"},
		"topic":  {Domain: "acme", Kind: "arrived", FocusType: "ServiceRequest", FocusID: "x"},
		"kind":   {Domain: "acme", Topic: "worklist", FocusType: "ServiceRequest", FocusID: "x"},
		"focus":  {Domain: "acme", Topic: "worklist", Kind: "arrived", FocusType: "ServiceRequest"},
	} {
		ok := worklistEvent("acme", "fine", store.EventArrived)
		err := s.AppendEvents(ctx, ok, e)
		assert.ErrorIs(t, err, store.ErrInvalid, name)
	}
	evs, err := s.EventsAfter(ctx, 0, 10)
	require.NoError(t, err)
	assert.Empty(t, evs, "a batch with an invalid event appends nothing")
	_, err = s.EventsAfter(ctx, 0, 0)
	assert.ErrorIs(t, err, store.ErrInvalid)
}

// testReplicasEvents has replicas append at once while a reader follows
// the log after the last seq it saw: it must see every event exactly
// once, which needs seqs to be committed in order.
func testReplicasEvents(t *testing.T, open func(ctx context.Context) (store.Store, error)) {
	ctx := ctxT(t)
	const replicas, each = 4, 40
	stores := openReplicas(t, open, replicas)
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Batches of three widen the window between a seq being
			// handed out and its commit.
			for j := 0; j < each; j += 3 {
				var batch []*store.Event
				for k := j; k < min(j+3, each); k++ {
					batch = append(batch, worklistEvent("acme", fmt.Sprintf("r%d-%d", i, k), store.EventChanged))
				}
				if err := s.AppendEvents(ctx, batch...); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	seen := map[string]int{}
	var after int64
	follow := func() {
		evs, err := stores[0].EventsAfter(ctx, after, 7)
		require.NoError(t, err)
		for _, e := range evs {
			seen[e.FocusID]++
			after = e.Seq
		}
	}
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		follow()
	}
	for range replicas * each {
		follow()
	}
	require.Equal(t, replicas*each, len(seen), "events seen once the appends ended")
	for id, n := range seen {
		assert.Equal(t, 1, n, id)
	}
}

// openReplicas opens n Stores on one database, closed at the test's end.
func openReplicas(t *testing.T, open func(ctx context.Context) (store.Store, error), n int) []store.Store {
	t.Helper()
	stores := make([]store.Store, n)
	for i := range stores {
		s, err := open(ctxT(t))
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	return stores
}
