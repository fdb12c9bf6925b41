package delivery_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// renewCounter counts lease renewals.
type renewCounter struct {
	store.Store
	n atomic.Int64
}

func (c *renewCounter) RenewLease(ctx context.Context, worker, domain, id string, version int, lease time.Duration, now time.Time) (bool, error) {
	newer, err := c.Store.RenewLease(ctx, worker, domain, id, version, lease, now)
	if err == nil {
		c.n.Add(1)
	}
	return newer, err
}

// blockedSubmit holds SubmitReport until released: a slow but live QUBS.
type blockedSubmit struct {
	*qubs.Client
	entered chan struct{}
	release chan struct{}
}

func (b *blockedSubmit) SubmitReport(ctx context.Context, domain, appt string, in qubs.ReportSubmission, key string) (*qubs.ReportReceipt, error) {
	close(b.entered)
	<-b.release
	return b.Client.SubmitReport(ctx, domain, appt, in, key)
}

// TestHeartbeatKeepsSlowWorker: a worker whose QUBS call outlasts several
// leases keeps its job (nobody else can claim it) and delivers it once.
func TestHeartbeatKeepsSlowWorker(t *testing.T) {
	f := newFixture(t)
	appt := f.sim.PendingIDs("acme")[8]
	f.accept(t, "r1", appt, "final", "text")
	rc := &renewCounter{Store: f.store}
	slow := &blockedSubmit{Client: f.client, entered: make(chan struct{}), release: make(chan struct{})}
	w := f.worker("slow")
	w.Store, w.QUBS, w.Lease = rc, slow, 400*time.Millisecond
	done := make(chan error, 1)
	go func() {
		_, err := w.DeliverOne(context.Background())
		done <- err
	}()
	<-slow.entered
	// Eight renewals, every lease/4: two whole leases have passed.
	deadline := time.Now().Add(30 * time.Second)
	for rc.n.Load() < 8 {
		require.True(t, time.Now().Before(deadline), "no heartbeat")
		time.Sleep(10 * time.Millisecond)
	}
	_, err := f.store.ClaimDelivery(context.Background(), "other", time.Minute, time.Now(), nil)
	assert.ErrorIs(t, err, store.ErrNotFound, "a live worker's job is not taken over")
	close(slow.release)
	require.NoError(t, <-done)
	r, err := f.store.Report(context.Background(), "acme", "r1")
	require.NoError(t, err)
	assert.Equal(t, store.DeliveryDelivered, r.Delivery.State, r.Delivery.LastError)
	assert.Len(t, f.sim.Reports("acme", appt), 1)
}

// TestStuckDeliveryWarns: past WarnAttempts the retry is logged at WARN
// with the correlation id, the appointment id and the QUBS error kind, and
// without the report's content.
func TestStuckDeliveryWarns(t *testing.T) {
	f := newFixture(t)
	appt := f.sim.PendingIDs("acme")[9]
	const phi = "Patient SECRET-PHI-MARKER has a fracture"
	f.accept(t, "r1", appt, "final", phi)
	f.sim.AddFault(qubssim.Fault{Method: "POST", Route: "/report", Status: http.StatusServiceUnavailable})
	var logs bytes.Buffer
	w := f.worker("w")
	w.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	w.WarnAttempts = 3
	clock := time.Now()
	w.Now = func() time.Time { return clock }
	for range 3 {
		_, err := w.DeliverOne(context.Background())
		require.NoError(t, err)
		clock = clock.Add(10 * time.Minute) // past the backoff
	}
	out := logs.String()
	assert.Contains(t, out, `"level":"WARN","msg":"delivery: not delivered yet"`)
	assert.Contains(t, out, `"appointment":"`+appt+`"`)
	assert.Contains(t, out, `"qubs_error_kind":"transient"`)
	assert.Contains(t, out, `"correlation_id":"qfb-dlv-`)
	assert.NotContains(t, out, "SECRET-PHI-MARKER")
	r, err := f.store.Report(context.Background(), "acme", "r1")
	require.NoError(t, err)
	assert.Contains(t, r.Delivery.LastError, "transient: ")
}

// stalledRenewals is a store whose lease renewals never answer: they wait
// until their context ends, as a database that stopped responding would.
type stalledRenewals struct{ store.Store }

func (stalledRenewals) RenewLease(ctx context.Context, _, _, _ string, _ int, _ time.Duration, _ time.Time) (bool, error) {
	<-ctx.Done()
	return false, ctx.Err()
}

// TestHeartbeatGivesUpOnStalledStore: when the store stops answering the
// heartbeat, the attempt is called off before its lease runs out (by 7/8
// of it), not left running into the lease another worker may then take,
// and the job is left to be claimed again.
func TestHeartbeatGivesUpOnStalledStore(t *testing.T) {
	f := newFixture(t)
	appt := f.sim.PendingIDs("acme")[10]
	f.accept(t, "r1", appt, "final", "text")
	w := f.worker("stalled")
	w.Store, w.Lease = stalledRenewals{f.store}, 2*time.Second
	done := make(chan error, 1)
	go func() {
		_, err := w.DeliverOne(context.Background())
		done <- err
	}()
	// The renewal right before the submission (newest) stalls too.
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second): // the attempt's own timeout is 5 minutes
		t.Fatal("the attempt outlived its lease")
	}
	assert.Empty(t, f.sim.Reports("acme", appt))
	r, err := f.store.Report(context.Background(), "acme", "r1")
	require.NoError(t, err)
	assert.Equal(t, store.DeliveryPending, r.Delivery.State)
}
