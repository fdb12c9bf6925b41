package delivery

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// failingRenewals is a store whose lease renewals fail while fail is set,
// as a store that is down does (not a conflict: the lease is not lost).
type failingRenewals struct {
	store.Store // nil: the heartbeat calls RenewLease only
	fail        atomic.Bool
}

func (s *failingRenewals) RenewLease(context.Context, string, string, string, int, time.Duration, time.Time) (bool, error) {
	if s.fail.Load() {
		return false, errors.New("store down")
	}
	return false, nil
}

// TestHeartbeatCountsNewestRenewals: the heartbeat's own renewals fail,
// but one made by newest (right before an upload slot or a submission)
// succeeds. The lease then runs from that renewal, and the attempt must
// not be called off at 7/8 of the first lease; it is once 7/8 of the
// renewed one passes without another renewal.
func TestHeartbeatCountsNewestRenewals(t *testing.T) {
	t.Parallel()
	const lease = 4 * time.Second
	st := &failingRenewals{}
	st.fail.Store(true)
	w := &Worker{Store: st, Name: "w1", Lease: lease, Now: time.Now}
	start := time.Now()
	hb := w.heartbeat(context.Background(), &store.Report{Domain: "acme", ID: "r1", Version: 1})
	defer hb.stop()

	time.Sleep(lease * 3 / 8) // between the heartbeat's ticks
	st.fail.Store(false)
	renewed := time.Now()
	require.NoError(t, hb.newest())
	st.fail.Store(true)

	firstGiveUp := start.Add(lease * 7 / 8)
	secondGiveUp := renewed.Add(lease * 7 / 8)
	select {
	case <-hb.ctx.Done():
		t.Fatalf("called off %v after the start (%v): the renewal by newest was not counted",
			time.Since(start).Round(time.Millisecond), context.Cause(hb.ctx))
	case <-time.After(time.Until(firstGiveUp) + (secondGiveUp.Sub(firstGiveUp))/2):
	}
	select {
	case <-hb.ctx.Done():
		assert.ErrorIs(t, context.Cause(hb.ctx), errLeaseLost)
		assert.False(t, time.Now().Before(secondGiveUp), "called off before 7/8 of the renewed lease")
	case <-time.After(time.Until(secondGiveUp) + lease/4):
		t.Fatal("the heartbeat kept an unrenewed lease past 7/8 of it")
	}
}
