package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// The delivery queue is per QUBS appointment: QUBS keeps one report per
// appointment, so reports r1 and r2 for one appointment overwrite each
// other there exactly as two versions of one report do.

func testAppointmentSupersedesAcrossReports(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	// r1's preliminary fails transiently and backs off for an hour; r2's
	// final for the same appointment arrives meanwhile.
	create(t, s, newReport("acme", "r1", "X", base))
	claim(t, s, "w1", base)
	require.NoError(t, s.RetryDelivery(ctx, "w1", "acme", "r1", 1, "qubs: transient (HTTP 503)", base.Add(time.Hour)))
	final := newReport("acme", "r2", "X", base.Add(time.Second))
	final.Status = "final"
	create(t, s, final)

	job := claim(t, s, "w2", base.Add(2*time.Second))
	assert.Equal(t, "r2", job.ID, "the newest report of the appointment goes, not after r1's backoff")
	old := version(t, s, "acme", "r1", 1)
	assert.Equal(t, store.DeliverySuperseded, old.Delivery.State)
	assert.Equal(t, "superseded by report r2 version 1", old.Delivery.LastError)
	assert.Equal(t, 1, old.Delivery.Attempts)
	require.NoError(t, s.CompleteDelivery(ctx, "w2", "acme", "r2", 1, "g2", base.Add(3*time.Second)))

	// r1's backoff ends: it must not be sent after r2's final.
	noClaim(t, s, base.Add(2*time.Hour))
	assert.Equal(t, 0, pending(t, s))
	assert.Equal(t, store.DeliveryDelivered, version(t, s, "acme", "r2", 1).Delivery.State)
}

func testAppointmentLease(t *testing.T, s store.Store) {
	t.Run("blocks every report of the appointment", func(t *testing.T) {
		ctx := ctxT(t)
		create(t, s, newReport("acme", "r1", "X", base))
		claim(t, s, "w1", base)
		create(t, s, newReport("acme", "r2", "X", base.Add(time.Second)))
		update(t, s, newReport("acme", "r2", "X", base.Add(2*time.Second)))
		noClaim(t, s, base.Add(30*time.Second))
		assert.Equal(t, store.DeliveryPending, version(t, s, "acme", "r1", 1).Delivery.State,
			"a leased version is never superseded")
		assert.Equal(t, store.DeliveryPending, version(t, s, "acme", "r2", 1).Delivery.State,
			"nothing of a leased appointment is touched")

		// The older report fails transiently: the newer one is claimed
		// last and the older one superseded.
		require.NoError(t, s.RetryDelivery(ctx, "w1", "acme", "r1", 1, "qubs: transient (HTTP 503)", base.Add(31*time.Second)))
		job := claim(t, s, "w2", base.Add(31*time.Second))
		assert.Equal(t, "r2", job.ID)
		assert.Equal(t, 2, job.Version)
		r1 := version(t, s, "acme", "r1", 1)
		assert.Equal(t, store.DeliverySuperseded, r1.Delivery.State)
		assert.Equal(t, "superseded by report r2 version 2", r1.Delivery.LastError)
		assert.Equal(t, "superseded by report r2 version 2", version(t, s, "acme", "r2", 1).Delivery.LastError)
		require.NoError(t, s.CompleteDelivery(ctx, "w2", "acme", "r2", 2, "g", base.Add(32*time.Second)))
		noClaim(t, s, base.Add(2*time.Hour))
	})

	t.Run("a delivered version is never touched", func(t *testing.T) {
		ctx := ctxT(t)
		create(t, s, newReport("acme", "r3", "Y", base))
		claim(t, s, "w1", base)
		create(t, s, newReport("acme", "r4", "Y", base.Add(time.Second)))
		noClaim(t, s, base.Add(30*time.Second))
		require.NoError(t, s.CompleteDelivery(ctx, "w1", "acme", "r3", 1, "g3", base.Add(40*time.Second)))

		job := claim(t, s, "w2", base.Add(41*time.Second))
		assert.Equal(t, "r4", job.ID, "the newer report goes after the older one")
		require.NoError(t, s.CompleteDelivery(ctx, "w2", "acme", "r4", 1, "g4", base.Add(42*time.Second)))
		r3 := version(t, s, "acme", "r3", 1)
		assert.Equal(t, store.DeliveryDelivered, r3.Delivery.State)
		assert.Equal(t, "g3", r3.Delivery.ReportGUID)
		assert.Empty(t, r3.Delivery.LastError)
	})

	t.Run("an expired lease loses to a newer report", func(t *testing.T) {
		ctx := ctxT(t)
		create(t, s, newReport("acme", "r5", "Z", base))
		claim(t, s, "slow", base)
		create(t, s, newReport("acme", "r6", "Z", base.Add(time.Second)))
		job := claim(t, s, "fast", base.Add(time.Minute))
		assert.Equal(t, "r6", job.ID)
		assert.Equal(t, store.DeliverySuperseded, version(t, s, "acme", "r5", 1).Delivery.State)
		// The slow worker overran its lease; its late calls are refused and
		// leave the fast worker's lease alone.
		assert.ErrorIs(t, s.CompleteDelivery(ctx, "slow", "acme", "r5", 1, "g", base.Add(2*time.Minute)), store.ErrConflict)
		assert.ErrorIs(t, s.RetryDelivery(ctx, "slow", "acme", "r5", 1, "x", base), store.ErrConflict)
		assert.Equal(t, "fast", version(t, s, "acme", "r6", 1).Delivery.LeasedBy)
		noClaim(t, s, base.Add(90*time.Second))
		require.NoError(t, s.CompleteDelivery(ctx, "fast", "acme", "r6", 1, "g", base.Add(90*time.Second)))
	})
}

func testAppointmentsIndependent(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	create(t, s, newReport("acme", "r1", "X", base))
	create(t, s, newReport("acme", "r2", "Y", base.Add(time.Second)))
	// The same appointment id in another domain is another appointment.
	create(t, s, newReport("northside", "r1", "X", base.Add(2*time.Second)))

	now := base.Add(time.Minute)
	var got []string
	for range 3 {
		job := claim(t, s, fmt.Sprintf("w%d", len(got)), now)
		got = append(got, job.Domain+"/"+job.ID)
	}
	assert.Equal(t, []string{"acme/r1", "acme/r2", "northside/r1"}, got, "leases on other appointments do not block")
	noClaim(t, s, now)
	for _, id := range []string{"r1", "r2"} {
		assert.Equal(t, store.DeliveryPending, version(t, s, "acme", id, 1).Delivery.State, "nothing superseded across appointments")
	}
	require.NoError(t, s.CompleteDelivery(ctx, "w0", "acme", "r1", 1, "g", now))
	require.NoError(t, s.CompleteDelivery(ctx, "w1", "acme", "r2", 1, "g", now))
	require.NoError(t, s.CompleteDelivery(ctx, "w2", "northside", "r1", 1, "g", now))
}

func testAppointmentNewestAccepted(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	// Accepted in this order: r1 v1, r2 v1, r1 v2. r2's CreatedAt is the
	// latest (a replica whose clock runs ahead accepted it), but r1 v2 was
	// accepted after it: acceptance order decides, not the caller's clock.
	create(t, s, newReport("acme", "r1", "X", base))
	create(t, s, newReport("acme", "r2", "X", base.Add(time.Hour)))
	update(t, s, newReport("acme", "r1", "X", base.Add(time.Second)))
	assert.Equal(t, 3, pending(t, s))

	now := base.Add(2 * time.Hour)
	job := claim(t, s, "w", now)
	assert.Equal(t, "r1", job.ID)
	assert.Equal(t, 2, job.Version)
	for _, v := range []struct {
		id      string
		version int
	}{{"r1", 1}, {"r2", 1}} {
		old := version(t, s, "acme", v.id, v.version)
		assert.Equal(t, store.DeliverySuperseded, old.Delivery.State, "%s v%d", v.id, v.version)
		assert.Equal(t, "superseded by report r1 version 2", old.Delivery.LastError)
		assert.Equal(t, 0, old.Delivery.Attempts, "never sent")
	}
	assert.Equal(t, 1, pending(t, s))
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", "r1", 2, "g", now))

	// A version accepted after a delivery goes next, the delivered one stays.
	update(t, s, newReport("acme", "r2", "X", base))
	job = claim(t, s, "w", now)
	assert.Equal(t, "r2", job.ID)
	assert.Equal(t, 2, job.Version)
	assert.Equal(t, store.DeliveryDelivered, version(t, s, "acme", "r1", 2).Delivery.State)
}

func testReportKeepsAppointment(t *testing.T, s store.Store) {
	create(t, s, newReport("acme", "r1", "X", base))
	err := s.UpdateReport(ctxT(t), newReport("acme", "r1", "Y", base.Add(time.Second)), 0)
	require.ErrorIs(t, err, store.ErrInvalid, "a report never moves to another appointment")
	got, err := s.Report(ctxT(t), "acme", "r1")
	require.NoError(t, err)
	assert.Equal(t, 1, got.Version)
	assert.Equal(t, "X", got.AppointmentID)
	assert.Equal(t, 1, pending(t, s))
}

// deliverAll has workers goroutines deliver from stores (round robin) while
// this goroutine accepts rounds of new reports and versions for appts, one
// at a time, so that their acceptance order is known. It checks that no
// two workers ever hold jobs of one appointment at once, that each
// appointment's deliveries follow acceptance order, and that every
// appointment ends with its last accepted version delivered and nothing
// pending.
func deliverAll(t *testing.T, stores []store.Store, workers int, appts []string, rounds int) {
	t.Helper()
	var (
		mu        sync.Mutex
		accepted  = map[string]int{} // "domain/id/vN" -> acceptance index within its appointment
		inFlight  = map[string]string{}
		lastIndex = map[string]int{}
		delivered = map[string]int{}
		wg        sync.WaitGroup
		kick      = make(chan struct{}, 1)
		done      = make(chan struct{})
	)
	key := func(r *store.Report) string { return fmt.Sprintf("%s/%s/v%d", r.Domain, r.ID, r.Version) }
	now := base.Add(time.Hour)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%len(stores)]
			name := fmt.Sprintf("worker-%d", w)
			finished := false
			for {
				job, err := s.ClaimDelivery(context.Background(), name, time.Minute, now, nil)
				if errors.Is(err, store.ErrNotFound) {
					if finished {
						return
					}
					select {
					case <-kick:
					case <-done:
						// One more look after the last report arrived.
						finished = true
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				k := key(job)
				mu.Lock()
				if other, ok := inFlight[job.AppointmentID]; ok {
					t.Errorf("%s claimed %s while %s works on appointment %s", name, k, other, job.AppointmentID)
				}
				inFlight[job.AppointmentID] = k
				idx, ok := accepted[k]
				if !ok {
					t.Errorf("%s claimed %s, which was not accepted yet", name, k)
				}
				if last, ok := lastIndex[job.AppointmentID]; ok && idx <= last {
					t.Errorf("%s delivered after a newer version (%d <= %d) of appointment %s", k, idx, last, job.AppointmentID)
				}
				lastIndex[job.AppointmentID] = idx
				delivered[k]++
				// Out of flight before the lease is released, so that the
				// next claim of the appointment cannot see it still in.
				delete(inFlight, job.AppointmentID)
				mu.Unlock()
				if err := s.CompleteDelivery(context.Background(), name, job.Domain, job.ID, job.Version, "g", now); err != nil {
					t.Errorf("%s completing %s: %v", name, k, err)
					return
				}
			}
		}()
	}

	// Each round: a new report per appointment, or (every third round) a
	// new version of the appointment's first report. A version is recorded
	// as accepted before it is written, since a worker may claim it before
	// the write returns.
	count := map[string]int{}
	last := map[string]string{}
	updates := map[string]int{}
produce:
	for i := range rounds {
		for j, appt := range appts {
			s := stores[(i+j)%len(stores)]
			r := newReport("acme", fmt.Sprintf("%s-r%d", appt, i), appt, base)
			r.Version = 1
			if i%3 == 2 {
				updates[appt]++
				r = newReport("acme", appt+"-r0", appt, base)
				r.Version = 1 + updates[appt]
			}
			k := key(r)
			mu.Lock()
			accepted[k] = count[appt]
			mu.Unlock()
			count[appt]++
			last[appt] = k
			var err error
			if r.Version == 1 {
				err = s.CreateReport(context.Background(), r)
			} else {
				// Updates take the report's lock, then the appointment's,
				// while workers claim and complete.
				err = s.UpdateReport(context.Background(), r, 0)
			}
			if err != nil || key(r) != k {
				t.Errorf("accepting %s: got %s, %v", k, key(r), err)
				break produce
			}
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	}
	close(done)
	wg.Wait()

	assert.Equal(t, 0, pending(t, stores[0]), "nothing left pending")
	for _, appt := range appts {
		assert.Equal(t, 1, delivered[last[appt]], "the last version of %s is delivered", appt)
	}
	for k, n := range delivered {
		assert.Equal(t, 1, n, "%s delivered once", k)
	}
}

func testConcurrentAppointmentDeliveries(t *testing.T, s store.Store) {
	deliverAll(t, []store.Store{s}, 4, []string{"X", "Y", "Z"}, 9)
}

func testReplicasAppointmentDeliveries(t *testing.T, open func(ctx context.Context) (store.Store, error)) {
	var stores []store.Store
	for range 3 {
		s, err := open(ctxT(t))
		require.NoError(t, err)
		defer s.Close()
		stores = append(stores, s)
	}
	deliverAll(t, stores, 6, []string{"X", "Y", "Z"}, 9)
}

// Lease fencing: RecordUpload, Complete, Retry and Fail succeed only for
// the worker holding the version's lease.

func testLeaseFencing(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	create(t, s, newReport("acme", "r1", "A1", base))
	claim(t, s, "worker-a", base)
	// worker-a stalls past its lease; worker-b takes the same job over.
	b := claim(t, s, "worker-b", base.Add(time.Minute))
	require.Equal(t, 1, b.Version)

	// worker-a wakes up: none of its calls may change the job, and above
	// all its retry must not release worker-b's lease.
	calls := []struct {
		name string
		call func(worker string) error
	}{
		{"upload", func(w string) error { return s.RecordUpload(ctx, w, "acme", "r1", 1, 0, "stale", base) }},
		{"retry", func(w string) error { return s.RetryDelivery(ctx, w, "acme", "r1", 1, "stale", base) }},
		{"fail", func(w string) error { return s.FailDelivery(ctx, w, "acme", "r1", 1, "stale") }},
		{"complete", func(w string) error { return s.CompleteDelivery(ctx, w, "acme", "r1", 1, "stale", base) }},
	}
	for _, tt := range calls {
		t.Run(tt.name, func(t *testing.T) {
			assert.ErrorIs(t, tt.call("worker-a"), store.ErrConflict, "a lease taken over")
			assert.ErrorIs(t, tt.call("worker-c"), store.ErrConflict, "a worker that never held it")
			assert.ErrorIs(t, tt.call(""), store.ErrInvalid)
		})
	}
	got := version(t, s, "acme", "r1", 1)
	assert.Equal(t, store.DeliveryPending, got.Delivery.State)
	assert.Empty(t, got.Delivery.LastError)
	assert.Equal(t, "worker-b", got.Delivery.LeasedBy, "worker-b's lease is intact")
	assert.Empty(t, got.Artifacts[0].QUBSGUID)
	noClaim(t, s, base.Add(90*time.Second))

	require.NoError(t, s.RecordUpload(ctx, "worker-b", "acme", "r1", 1, 0, "att-0", base.Add(70*time.Second)))
	require.NoError(t, s.CompleteDelivery(ctx, "worker-b", "acme", "r1", 1, "guid", base.Add(80*time.Second)))
	// A repeat of a completion is harmless, whoever repeats it: the report
	// is in QUBS.
	require.NoError(t, s.CompleteDelivery(ctx, "worker-a", "acme", "r1", 1, "guid", base.Add(80*time.Second)))
	assert.Equal(t, "guid", version(t, s, "acme", "r1", 1).Delivery.ReportGUID)
}

func testLeaseFencingUntaken(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	create(t, s, newReport("acme", "r1", "A1", base))
	claim(t, s, "w1", base)
	// The lease expired but nobody took it over: the job is still w1's.
	late := base.Add(5 * time.Minute)
	require.NoError(t, s.RecordUpload(ctx, "w1", "acme", "r1", 1, 0, "att-0", late))
	require.NoError(t, s.RetryDelivery(ctx, "w1", "acme", "r1", 1, "qubs: transient (HTTP 503)", late.Add(time.Minute)))
	// Released: nobody's, not even its last worker's.
	assert.ErrorIs(t, s.CompleteDelivery(ctx, "w1", "acme", "r1", 1, "g", late), store.ErrConflict)
	assert.ErrorIs(t, s.FailDelivery(ctx, "w1", "acme", "r1", 1, "x"), store.ErrConflict)
	assert.ErrorIs(t, s.RecordUpload(ctx, "w1", "acme", "r1", 1, 1, "att-1", late), store.ErrConflict)
	got := version(t, s, "acme", "r1", 1)
	assert.Equal(t, store.DeliveryPending, got.Delivery.State)
	assert.Empty(t, got.Delivery.LeasedBy)

	// The same worker claiming it again holds it again.
	job := claim(t, s, "w1", late.Add(time.Minute))
	assert.Equal(t, 2, job.Delivery.Attempts)
	require.NoError(t, s.FailDelivery(ctx, "w1", "acme", "r1", 1, "qubs: invalid (HTTP 422)"))
	require.NoError(t, s.FailDelivery(ctx, "w2", "acme", "r1", 1, "again"), "failing a failed version again is harmless")
	assert.Equal(t, "qubs: invalid (HTTP 422)", version(t, s, "acme", "r1", 1).Delivery.LastError)
}

func testIdempotencyLookup(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	_, err := s.LookupIdempotency(ctx, "acme", "DiagnosticReport:create", "k1")
	require.ErrorIs(t, err, store.ErrNotFound)

	rec := &store.IdempotencyRecord{
		Domain: "acme", Scope: "DiagnosticReport:create", Key: "k1",
		RequestHash: "h1", ResourceType: "DiagnosticReport", ResourceID: "r1", Version: 1, CreatedAt: base,
	}
	existing, err := s.ClaimIdempotency(ctx, rec)
	require.NoError(t, err)
	require.Nil(t, existing)

	got, err := s.LookupIdempotency(ctx, "acme", "DiagnosticReport:create", "k1")
	require.NoError(t, err)
	assert.Equal(t, *rec, *got)
	assert.Equal(t, time.UTC, got.CreatedAt.Location())

	tests := []struct {
		name               string
		domain, scope, key string
		want               error
	}{
		{"other key", "acme", "DiagnosticReport:create", "k2", store.ErrNotFound},
		{"other scope", "acme", "Communication:create", "k1", store.ErrNotFound},
		{"other domain", "northside", "DiagnosticReport:create", "k1", store.ErrNotFound},
		{"key case matters", "acme", "DiagnosticReport:create", "K1", store.ErrNotFound},
		{"no domain", "", "DiagnosticReport:create", "k1", store.ErrInvalid},
		{"no scope", "acme", "", "k1", store.ErrInvalid},
		{"no key", "acme", "DiagnosticReport:create", "", store.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.LookupIdempotency(ctxT(t), tt.domain, tt.scope, tt.key)
			assert.Nil(t, got)
			assert.ErrorIs(t, err, tt.want)
		})
	}
}

// CheckQueueUpgrade checks a store just migrated by 0003 (per-appointment
// queues) from a database that had only 0001 and 0002 and held this
// delivery state, in the old per-report form (t is t0 plus the duration):
//
//	report  appointment  version  created  state      due    report row's lease
//	r1      X            1        t        delivered  t      version 2, "old-worker", until t+10m
//	r1      X            2        t+1s     pending    t+1s
//	r2      X            1        t+2s     pending    t+2s   none
//	r3      Y            1        t        pending    t+1h   none (attempts 1, retried)
//	r4      Z            1        t+5s     pending    t+5s   none
//	r4      Z            2        t+3s     pending    t+3s   (a clock that went back)
//
// all in domain "acme", r1 v1 delivered as "g1".
func CheckQueueUpgrade(t *testing.T, s store.Store, t0 time.Time) {
	t.Helper()
	ctx := ctxT(t)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	assert.Equal(t, 5, pending(t, s))

	leased := version(t, s, "acme", "r1", 2)
	assert.Equal(t, "old-worker", leased.Delivery.LeasedBy, "the lease moves to the appointment")
	require.NotNil(t, leased.Delivery.LeaseUntil)
	assert.True(t, at(10*time.Minute).Equal(*leased.Delivery.LeaseUntil))

	// Z: r4's versions keep their order despite their creation times.
	job := claim(t, s, "w", at(5*time.Minute))
	assert.Equal(t, "r4", job.ID)
	assert.Equal(t, 2, job.Version)
	assert.Equal(t, "superseded by report r4 version 2", version(t, s, "acme", "r4", 1).Delivery.LastError)
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", "r4", 2, "g4", at(5*time.Minute)))
	// X is leased until t+10m; Y is not due.
	noClaim(t, s, at(5*time.Minute))

	// X: r2 was accepted last; r1's pending version is superseded by it,
	// its delivered one left alone.
	job = claim(t, s, "w", at(10*time.Minute))
	assert.Equal(t, "r2", job.ID)
	r1v2 := version(t, s, "acme", "r1", 2)
	assert.Equal(t, store.DeliverySuperseded, r1v2.Delivery.State)
	assert.Equal(t, "superseded by report r2 version 1", r1v2.Delivery.LastError)
	r1v1 := version(t, s, "acme", "r1", 1)
	assert.Equal(t, store.DeliveryDelivered, r1v1.Delivery.State)
	assert.Equal(t, "g1", r1v1.Delivery.ReportGUID)
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", "r2", 1, "g2", at(10*time.Minute)))

	// New versions are numbered after the migrated ones.
	update(t, s, newReport("acme", "r1", "X", at(11*time.Minute)))
	job = claim(t, s, "w", at(11*time.Minute))
	assert.Equal(t, "r1", job.ID)
	assert.Equal(t, 3, job.Version)
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", "r1", 3, "g1b", at(11*time.Minute)))

	// Y: the retry keeps its due time and attempts.
	noClaim(t, s, at(time.Hour-time.Microsecond))
	job = claim(t, s, "w", at(time.Hour))
	assert.Equal(t, "r3", job.ID)
	assert.Equal(t, 2, job.Delivery.Attempts)
	assert.Equal(t, 1, pending(t, s))
}
