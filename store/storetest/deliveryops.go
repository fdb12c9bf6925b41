package storetest

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// testDeliveryOps covers DeliveryOps: what an operator does about failed
// deliveries. The cases share the store's one queue, so they run in turn
// and each leaves nothing due.
func testDeliveryOps(t *testing.T, s store.Store) {
	t.Run("requeue a failed version: delivered once, history kept", func(t *testing.T) {
		ctx := ctxT(t)
		create(t, s, newReport("rq", "r1", "A1", base))
		claim(t, s, "w1", base)
		require.NoError(t, s.FailDelivery(ctx, "w1", "rq", "r1", 1, "not found: qubs.SubmitReport: not found (HTTP 404)"))
		noClaim(t, s, base.Add(time.Hour))

		now := base.Add(2 * time.Hour)
		require.NoError(t, s.RequeueDelivery(ctx, "rq", "r1", 1, now))
		got := version(t, s, "rq", "r1", 1)
		assert.Equal(t, store.DeliveryPending, got.Delivery.State)
		assert.Equal(t, 1, got.Delivery.Attempts, "attempts are history")
		assert.Contains(t, got.Delivery.LastError, "not found", "so is the last error")
		assert.True(t, now.Equal(got.Delivery.NextAttemptAt), "due now")

		job := claim(t, s, "w2", now)
		assert.Equal(t, "r1", job.ID)
		assert.Equal(t, 2, job.Delivery.Attempts)
		noClaim(t, s, now) // exactly once: leased
		require.NoError(t, s.CompleteDelivery(ctx, "w2", "rq", "r1", 1, "guid", now))
		noClaim(t, s, now.Add(time.Hour))
		assert.ErrorIs(t, s.RequeueDelivery(ctx, "rq", "r1", 1, now), store.ErrConflict, "delivered: nothing to redo")
	})

	t.Run("requeue refusals", func(t *testing.T) {
		ctx := ctxT(t)
		assert.ErrorIs(t, s.RequeueDelivery(ctx, "rf", "nope", 1, base), store.ErrNotFound)
		create(t, s, newReport("rf", "r1", "A1", base))
		assert.ErrorIs(t, s.RequeueDelivery(ctx, "rf", "r1", 1, base), store.ErrConflict, "pending is not failed")
		assert.ErrorIs(t, s.RequeueDelivery(ctx, "rf", "r1", 2, base), store.ErrNotFound)
		claim(t, s, "w1", base)
		require.NoError(t, s.FailDelivery(ctx, "w1", "rf", "r1", 1, "invalid: refused"))
		// Another report for the same appointment is newer: QUBS keeps one
		// report per appointment, so the failed one would be superseded.
		create(t, s, newReport("rf", "r2", "A1", base.Add(time.Minute)))
		err := s.RequeueDelivery(ctx, "rf", "r1", 1, base.Add(time.Hour))
		require.ErrorIs(t, err, store.ErrConflict)
		assert.Contains(t, err.Error(), "r2")
		assert.NotContains(t, err.Error(), phi)
		assert.Equal(t, store.DeliveryFailed, version(t, s, "rf", "r1", 1).Delivery.State)
		require.NoError(t, s.AbandonDelivery(ctx, "rf", "r2", 1, base))
	})

	t.Run("abandon a pending version: never sent", func(t *testing.T) {
		ctx := ctxT(t)
		create(t, s, newReport("ab", "r1", "A1", base))
		require.NoError(t, s.AbandonDelivery(ctx, "ab", "r1", 1, base))
		got := version(t, s, "ab", "r1", 1)
		assert.Equal(t, store.DeliveryFailed, got.Delivery.State)
		assert.Equal(t, store.DeliveryAbandoned, got.Delivery.LastErrorKind())
		noClaim(t, s, base.Add(time.Hour))
		require.NoError(t, s.AbandonDelivery(ctx, "ab", "r1", 1, base), "abandoning twice is harmless")
		assert.ErrorIs(t, s.RequeueDelivery(ctx, "ab", "r1", 1, base), store.ErrConflict, "abandoned is final")

		// A newer version of the appointment is still delivered.
		update(t, s, newReport("ab", "r1", "A1", base.Add(time.Minute)))
		assert.Equal(t, 2, claim(t, s, "w", base.Add(time.Minute)).Version)
		require.NoError(t, s.CompleteDelivery(ctx, "w", "ab", "r1", 2, "guid", base.Add(time.Minute)))
	})

	t.Run("abandon a failed version keeps why it failed", func(t *testing.T) {
		ctx := ctxT(t)
		create(t, s, newReport("af", "r1", "A1", base))
		claim(t, s, "w1", base)
		require.NoError(t, s.FailDelivery(ctx, "w1", "af", "r1", 1, "invalid: qubs.SubmitReport: invalid (HTTP 400)"))
		require.NoError(t, s.AbandonDelivery(ctx, "af", "r1", 1, base))
		last := version(t, s, "af", "r1", 1).Delivery.LastError
		assert.True(t, strings.HasPrefix(last, "abandoned: "), last)
		assert.Contains(t, last, "invalid")
	})

	t.Run("abandon under a lease", func(t *testing.T) {
		ctx := ctxT(t)
		create(t, s, newReport("al", "r1", "A1", base))
		claim(t, s, "w1", base) // leased until base+1m
		assert.ErrorIs(t, s.AbandonDelivery(ctx, "al", "r1", 1, base.Add(time.Second)), store.ErrConflict, "a worker may be sending it")
		// Once the lease expired nobody is sending it; the late worker's
		// calls are refused.
		require.NoError(t, s.AbandonDelivery(ctx, "al", "r1", 1, base.Add(2*time.Minute)))
		assert.ErrorIs(t, s.CompleteDelivery(ctx, "w1", "al", "r1", 1, "g", base), store.ErrConflict)
		noClaim(t, s, base.Add(time.Hour))
		assert.ErrorIs(t, s.AbandonDelivery(ctx, "al", "nope", 1, base), store.ErrNotFound)
	})

	t.Run("list", func(t *testing.T) {
		ctx := ctxT(t)
		create(t, s, newReport("ls", "r1", "A1", base))
		create(t, s, newReport("ls", "r2", "A2", base.Add(time.Second)))
		create(t, s, newReport("ls-other", "r3", "A3", base.Add(2*time.Second)))
		require.NoError(t, s.AbandonDelivery(ctx, "ls", "r1", 1, base))

		all, err := s.ListDeliveries(ctx, store.DeliveryFilter{Domain: "ls"})
		require.NoError(t, err)
		require.Len(t, all, 2)
		assert.Equal(t, "r2", all[0].ReportID, "newest first")
		assert.Equal(t, "A2", all[0].AppointmentID)
		assert.Equal(t, store.DeliveryPending, all[0].Delivery.State)
		assert.True(t, base.Add(time.Second).Equal(all[0].CreatedAt))
		assert.Equal(t, store.DeliveryFailed, all[1].Delivery.State)

		failed, err := s.ListDeliveries(ctx, store.DeliveryFilter{Domain: "ls", States: []string{store.DeliveryFailed}})
		require.NoError(t, err)
		require.Len(t, failed, 1)
		assert.Equal(t, "r1", failed[0].ReportID)

		one, err := s.ListDeliveries(ctx, store.DeliveryFilter{Domain: "ls", Limit: 1})
		require.NoError(t, err)
		assert.Len(t, one, 1)

		_, err = s.ListDeliveries(ctx, store.DeliveryFilter{States: []string{"lost"}})
		assert.ErrorIs(t, err, store.ErrInvalid)
	})
}
