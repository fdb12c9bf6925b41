package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// testRecordUploadSlot: a slot recorded before its PUT survives a takeover
// (so the next worker asks QUBS about it instead of making another), and
// never overwrites an upload already recorded.
func testRecordUploadSlot(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	create(t, s, newReport("acme", "r1", "A1", base))
	claim(t, s, "w1", base)
	require.NoError(t, s.RecordUploadSlot(ctx, "w1", "acme", "r1", 1, 0, "slot-0"))
	require.NoError(t, s.RecordUpload(ctx, "w1", "acme", "r1", 1, 1, "slot-1", base))
	require.NoError(t, s.RecordUploadSlot(ctx, "w1", "acme", "r1", 1, 1, "slot-1b"))

	// w1 crashes; w2 takes the job over once the lease ran out.
	job := claim(t, s, "w2", base.Add(time.Minute))
	assert.Equal(t, "slot-0", job.Artifacts[0].QUBSGUID)
	assert.Nil(t, job.Artifacts[0].UploadedAt)
	assert.Equal(t, "slot-1", job.Artifacts[1].QUBSGUID, "an uploaded artifact keeps its slot")
	assert.NotNil(t, job.Artifacts[1].UploadedAt)

	// Fenced like RecordUpload.
	assert.ErrorIs(t, s.RecordUploadSlot(ctx, "w1", "acme", "r1", 1, 0, "late"), store.ErrConflict)
	assert.ErrorIs(t, s.RecordUploadSlot(ctx, "w2", "acme", "r1", 1, 5, "g"), store.ErrNotFound)
	assert.ErrorIs(t, s.RecordUploadSlot(ctx, "", "acme", "r1", 1, 0, "g"), store.ErrInvalid)
	require.NoError(t, s.RecordUpload(ctx, "w2", "acme", "r1", 1, 0, "slot-0", base.Add(time.Minute)))
	a, err := s.ReportArtifact(ctx, "acme", "r1", 1, 0)
	require.NoError(t, err)
	assert.Equal(t, "slot-0", a.QUBSGUID)
	assert.NotNil(t, a.UploadedAt)
}

// testRenewLease: a heartbeat keeps a live worker's job past its first
// lease, says when a newer version waits, and is fenced.
func testRenewLease(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	create(t, s, newReport("acme", "r1", "A1", base))
	claim(t, s, "w1", base) // lease until base+1m

	newer, err := s.RenewLease(ctx, "w1", "acme", "r1", 1, time.Minute, base.Add(50*time.Second))
	require.NoError(t, err)
	assert.False(t, newer)
	// Renewed until base+110s: nobody takes it over at base+100s.
	noClaim(t, s, base.Add(100*time.Second))

	// A newer version is accepted meanwhile: it waits, and the worker
	// learns of it.
	update(t, s, newReport("acme", "r1", "A1", base.Add(101*time.Second)))
	newer, err = s.RenewLease(ctx, "w1", "acme", "r1", 1, time.Minute, base.Add(102*time.Second))
	require.NoError(t, err)
	assert.True(t, newer)
	noClaim(t, s, base.Add(150*time.Second))

	// Fencing: only the holder renews, only a pending version.
	_, err = s.RenewLease(ctx, "w2", "acme", "r1", 1, time.Minute, base.Add(103*time.Second))
	assert.ErrorIs(t, err, store.ErrConflict)
	_, err = s.RenewLease(ctx, "w1", "acme", "r1", 2, time.Minute, base.Add(103*time.Second))
	assert.ErrorIs(t, err, store.ErrConflict)
	_, err = s.RenewLease(ctx, "w1", "acme", "nope", 1, time.Minute, base.Add(103*time.Second))
	assert.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.RenewLease(ctx, "w1", "acme", "r1", 1, 0, base.Add(103*time.Second))
	assert.ErrorIs(t, err, store.ErrInvalid)

	// The worker gives the job back; the next claim takes the newer
	// version and supersedes the old one.
	require.NoError(t, s.RetryDelivery(ctx, "w1", "acme", "r1", 1, "superseded while uploading", base.Add(103*time.Second)))
	job := claim(t, s, "w2", base.Add(104*time.Second))
	assert.Equal(t, 2, job.Version)
	assert.Equal(t, store.DeliverySuperseded, version(t, s, "acme", "r1", 1).Delivery.State)
	_, err = s.RenewLease(ctx, "w1", "acme", "r1", 1, time.Minute, base.Add(105*time.Second))
	assert.ErrorIs(t, err, store.ErrConflict)
}

// testDeliveryStats: per-domain pending, oldest pending and failed.
func testDeliveryStats(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	st, err := s.DeliveryStats(ctx)
	require.NoError(t, err)
	assert.Empty(t, st)

	create(t, s, newReport("acme", "r1", "A1", base))
	create(t, s, newReport("acme", "r2", "A2", base.Add(time.Minute)))
	create(t, s, newReport("beta", "r3", "B1", base.Add(2*time.Minute)))
	create(t, s, newReport("beta", "r4", "B2", base.Add(3*time.Minute)))
	j := claim(t, s, "w", base.Add(time.Hour))
	require.Equal(t, "r1", j.ID)
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", "r1", 1, "g", base.Add(time.Hour)))
	j = claim(t, s, "w", base.Add(time.Hour))
	require.Equal(t, "r2", j.ID)
	require.NoError(t, s.FailDelivery(ctx, "w", "acme", "r2", 1, "qubs: invalid"))
	j = claim(t, s, "w", base.Add(time.Hour))
	require.Equal(t, "r3", j.ID)
	require.NoError(t, s.FailDelivery(ctx, "w", "beta", "r3", 1, "qubs: invalid"))

	st, err = s.DeliveryStats(ctx)
	require.NoError(t, err)
	require.Len(t, st, 2)
	assert.Equal(t, store.DeliveryStats{Domain: "acme", Failed: 1}, st[0])
	assert.Equal(t, "beta", st[1].Domain)
	assert.Equal(t, 1, st[1].Pending)
	assert.Equal(t, 1, st[1].Failed)
	require.NotNil(t, st[1].OldestPending)
	assert.True(t, base.Add(3*time.Minute).Equal(*st[1].OldestPending))
}
