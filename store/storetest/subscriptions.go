package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

func newSubscription(domain, id, topic string, criteria ...string) *store.Subscription {
	return &store.Subscription{
		Domain: domain, ID: id, Topic: topic, Criteria: criteria,
		Endpoint: "https://receiver.example/hook", Content: store.PayloadIDOnly,
		Headers: []string{"Authorization: Bearer secret"}, HeartbeatPeriod: time.Minute,
		Timeout: 5 * time.Second, MaxCount: 2, Resource: []byte(`{"resourceType":"Subscription"}`),
	}
}

// matchCT matches events whose resource mentions CT when the
// subscription's criteria ask for it: enough to prove the store consults
// the matcher, whose real logic is the subs package's.
func matchCT(ev *store.Event, sub *store.Subscription) bool {
	for _, c := range sub.Criteria {
		if strings.Contains(c, "CT") && !strings.Contains(string(ev.Resource), "CT") {
			return false
		}
	}
	return true
}

func dispatchAll(t *testing.T, s store.Store) int {
	t.Helper()
	total := 0
	for {
		evs, notes, err := s.DispatchEvents(ctxT(t), 7, matchCT)
		require.NoError(t, err)
		total += notes
		if evs == 0 {
			return total
		}
	}
}

// drain claims and settles successfully every due subscription at now,
// telling saw (when set) what each claim returned.
func drain(t *testing.T, s store.Store, now time.Time, saw func(*store.Subscription, []store.Notification)) {
	t.Helper()
	settle(t, s, now, "", saw)
}

func testSubscriptionLifecycle(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	// Events before the subscription are not its own.
	require.NoError(t, s.AppendEvents(ctx, worklistEvent("acme", "old", store.EventArrived)))

	sub := newSubscription("acme", "s1", store.EventTopicWorklist)
	require.NoError(t, s.CreateSubscription(ctx, sub))
	assert.Equal(t, store.SubscriptionRequested, sub.Status)
	assert.ErrorIs(t, s.CreateSubscription(ctx, newSubscription("acme", "s1", store.EventTopicWorklist)), store.ErrConflict)
	assert.ErrorIs(t, s.CreateSubscription(ctx, &store.Subscription{Domain: "acme", ID: "x"}), store.ErrInvalid)
	ct := newSubscription("acme", "s2", store.EventTopicWorklist, "ServiceRequest?modality=CT")
	require.NoError(t, s.CreateSubscription(ctx, ct))
	require.NoError(t, s.CreateSubscription(ctx, newSubscription("acme", "s3", store.EventTopicReportDelivery)))
	require.NoError(t, s.CreateSubscription(ctx, newSubscription("other", "s1", store.EventTopicWorklist)))

	got, err := s.Subscription(ctx, "acme", "s1")
	require.NoError(t, err)
	assert.Equal(t, []string{"Authorization: Bearer secret"}, got.Headers)
	assert.Equal(t, time.Minute, got.HeartbeatPeriod)
	assert.Equal(t, sub.StartSeq, got.StartSeq)

	// The handshake is due first, one sender at a time.
	now := base
	claimed, notes, err := s.ClaimNotifications(ctx, "w1", time.Minute, now)
	require.NoError(t, err)
	assert.Empty(t, notes)
	assert.Equal(t, store.SubscriptionRequested, claimed.Status)
	assert.ErrorIs(t, s.SettleNotifications(ctx, "w2", claimed.Domain, claimed.ID, 0, "", now, now, time.Hour), store.ErrConflict)
	require.NoError(t, s.SettleNotifications(ctx, "w1", claimed.Domain, claimed.ID, 0, "", now, now, time.Hour))
	drain(t, s, now, nil)

	// Five events: s1 gets all, s2 (CT) the CT ones, s3 (other topic) and
	// the other domain's none.
	var evs []*store.Event
	for i, mod := range []string{"CT", "MR", "CT", "US", "CT"} {
		e := worklistEvent("acme", fmt.Sprintf("sr%d", i), store.EventArrived)
		e.Resource = []byte(`{"resourceType":"ServiceRequest","modality":"` + mod + `"}`)
		evs = append(evs, e)
	}
	require.NoError(t, s.AppendEvents(ctx, evs...))
	assert.Equal(t, 8, dispatchAll(t, s))
	assert.Equal(t, 0, dispatchAll(t, s), "dispatched once")

	got, err = s.Subscription(ctx, "acme", "s2")
	require.NoError(t, err)
	assert.Equal(t, int64(3), got.EventsSinceStart)
	all, err := s.Notifications(ctx, "acme", "s2", 1, 100, 100)
	require.NoError(t, err)
	require.Len(t, all, 3)
	for i, n := range all {
		assert.Equal(t, int64(i+1), n.EventNumber)
		assert.Nil(t, n.SentAt)
	}
	assert.Equal(t, []string{"sr0", "sr2", "sr4"}, []string{all[0].Event.FocusID, all[1].Event.FocusID, all[2].Event.FocusID})
	_, err = s.Notifications(ctx, "acme", "nope", 1, 2, 10)
	assert.ErrorIs(t, err, store.ErrNotFound)

	// Senders get MaxCount at a time, in order; a leased subscription
	// is nobody else's.
	seen := map[string][]int64{}
	c1, _, err := s.ClaimNotifications(ctx, "w1", time.Minute, now)
	require.NoError(t, err)
	c2, _, err := s.ClaimNotifications(ctx, "w2", time.Minute, now)
	require.NoError(t, err)
	assert.NotEqual(t, c1.ID, c2.ID)
	_, _, err = s.ClaimNotifications(ctx, "w3", time.Minute, now)
	require.ErrorIs(t, err, store.ErrNotFound, "both due subscriptions are leased")
	require.NoError(t, s.SettleNotifications(ctx, "w1", c1.Domain, c1.ID, 0, "", now, now, time.Hour))
	require.NoError(t, s.SettleNotifications(ctx, "w2", c2.Domain, c2.ID, 0, "", now, now, time.Hour))
	drain(t, s, now, func(c *store.Subscription, notes []store.Notification) {
		require.LessOrEqual(t, len(notes), 2)
		for _, n := range notes {
			seen[c.ID] = append(seen[c.ID], n.EventNumber)
		}
	})
	assert.Equal(t, map[string][]int64{"s1": {1, 2, 3, 4, 5}, "s2": {1, 2, 3}}, seen)
	all, err = s.Notifications(ctx, "acme", "s1", 2, 3, 100)
	require.NoError(t, err)
	require.Len(t, all, 2)
	assert.NotNil(t, all[0].SentAt)

	// A heartbeat is due a period after the last send.
	c, notes, err := s.ClaimNotifications(ctx, "w1", time.Minute, now.Add(time.Minute))
	require.NoError(t, err)
	assert.Empty(t, notes)
	require.NoError(t, s.SettleNotifications(ctx, "w1", c.Domain, c.ID, 0, "", now.Add(time.Minute), now, time.Hour))

	list, err := s.SearchSubscriptions(ctx, "acme", nil)
	require.NoError(t, err)
	assert.Len(t, list, 3)
	list, err = s.SearchSubscriptions(ctx, "acme", []string{store.SubscriptionError})
	require.NoError(t, err)
	assert.Empty(t, list)

	require.NoError(t, s.DeleteSubscription(ctx, "acme", "s1"))
	assert.ErrorIs(t, s.DeleteSubscription(ctx, "acme", "s1"), store.ErrNotFound)
	_, err = s.Subscription(ctx, "acme", "s1")
	assert.ErrorIs(t, err, store.ErrNotFound)
}

func testSubscriptionFailure(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	sub := newSubscription("acme", "f1", store.EventTopicReportDelivery)
	sub.HeartbeatPeriod = 0
	require.NoError(t, s.CreateSubscription(ctx, sub))
	now := base
	c, _, err := s.ClaimNotifications(ctx, "w", time.Minute, now)
	require.NoError(t, err)
	require.NoError(t, s.SettleNotifications(ctx, "w", c.Domain, c.ID, 0, "", now, now, time.Hour))
	_, _, err = s.ClaimNotifications(ctx, "w", time.Minute, now.Add(time.Hour))
	require.ErrorIs(t, err, store.ErrNotFound, "no heartbeat without a period")

	for i := range 3 {
		require.NoError(t, s.AppendEvents(ctx, &store.Event{Domain: "acme", Topic: store.EventTopicReportDelivery, Kind: store.EventDelivered,
			FocusType: "DiagnosticReport", FocusID: fmt.Sprintf("r%d", i)}))
	}
	dispatchAll(t, s)
	// Failures back off, and past errorAfter the subscription is in error.
	for i, at := range []time.Duration{0, time.Minute, 10 * time.Minute} {
		now := base.Add(at)
		c, notes, err := s.ClaimNotifications(ctx, "w", time.Minute, now)
		require.NoError(t, err, "attempt %d", i)
		require.Equal(t, int64(1), notes[0].EventNumber)
		require.NoError(t, s.SettleNotifications(ctx, "w", c.Domain, c.ID, 0, "http 503", now, now.Add(time.Minute), 5*time.Minute))
		_, _, err = s.ClaimNotifications(ctx, "w", time.Minute, now.Add(30*time.Second))
		require.ErrorIs(t, err, store.ErrNotFound, "backing off")
	}
	got, err := s.Subscription(ctx, "acme", "f1")
	require.NoError(t, err)
	assert.Equal(t, store.SubscriptionError, got.Status)
	assert.Equal(t, "http 503", got.Error)
	assert.Equal(t, 3, got.Attempts)
	// Events still number while in error, and a success resumes at 1.
	require.NoError(t, s.AppendEvents(ctx, &store.Event{Domain: "acme", Topic: store.EventTopicReportDelivery, Kind: store.EventFailed,
		FocusType: "DiagnosticReport", FocusID: "r3"}))
	dispatchAll(t, s)
	var numbers []int64
	drain(t, s, base.Add(time.Hour), func(_ *store.Subscription, notes []store.Notification) {
		for _, n := range notes {
			numbers = append(numbers, n.EventNumber)
		}
	})
	assert.Equal(t, []int64{1, 2, 3, 4}, numbers)
	got, err = s.Subscription(ctx, "acme", "f1")
	require.NoError(t, err)
	assert.Equal(t, store.SubscriptionActive, got.Status)
	assert.Empty(t, got.Error)
	assert.Nil(t, got.FailingSince)
}

// testSubscriptionDeliveryEvents: a delivery's end is an event of the
// report-delivery topic, appended once.
func testSubscriptionDeliveryEvents(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	r := newReport("acme", "rep1", "A1", base)
	require.NoError(t, s.CreateReport(ctx, r))
	j, err := s.ClaimDelivery(ctx, "w", time.Minute, base.Add(time.Hour), nil)
	require.NoError(t, err)
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", j.ID, j.Version, "guid", time.Now()))
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", j.ID, j.Version, "guid", time.Now()))
	evs, err := s.EventsAfter(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	assert.Equal(t, store.EventTopicReportDelivery, evs[0].Topic)
	assert.Equal(t, store.EventDelivered, evs[0].Kind)
	assert.Equal(t, "DiagnosticReport", evs[0].FocusType)
	assert.Equal(t, "rep1", evs[0].FocusID)
	assert.Equal(t, "A1", evs[0].AppointmentID)
}

// testReplicasDispatch: replicas dispatching and sending at once number
// every event once per subscription, without gaps.
func testReplicasDispatch(t *testing.T, open func(ctx context.Context) (store.Store, error)) {
	ctx := ctxT(t)
	const replicas, events = 3, 60
	stores := openReplicas(t, open, replicas)
	for i := range 3 {
		require.NoError(t, stores[0].CreateSubscription(ctx, newSubscription("acme", fmt.Sprintf("s%d", i), store.EventTopicWorklist)))
	}
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := range events / replicas {
				if err := s.AppendEvents(ctx, worklistEvent("acme", fmt.Sprintf("e%d-%d", i, j), store.EventChanged)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range events {
				if _, _, err := s.DispatchEvents(ctx, 5, matchCT); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	dispatchAll(t, stores[0])
	for i := range 3 {
		ns, err := stores[1].Notifications(ctx, "acme", fmt.Sprintf("s%d", i), 1, 1000, 1000)
		require.NoError(t, err)
		require.Len(t, ns, events)
		seqs := map[int64]bool{}
		for k, n := range ns {
			assert.Equal(t, int64(k+1), n.EventNumber)
			assert.False(t, seqs[n.Event.Seq], "event %d numbered twice", n.Event.Seq)
			seqs[n.Event.Seq] = true
		}
	}
}

// settleAll claims every due subscription at now and settles it: a
// success, unless failing names it (then a failure retried an hour on).
func settleAll(t *testing.T, s store.Store, now time.Time, failing string) {
	t.Helper()
	settle(t, s, now, failing, nil)
}

// settle is drain and settleAll.
func settle(t *testing.T, s store.Store, now time.Time, failing string, saw func(*store.Subscription, []store.Notification)) {
	t.Helper()
	for {
		c, notes, err := s.ClaimNotifications(ctxT(t), "w1", time.Minute, now)
		if err != nil {
			require.ErrorIs(t, err, store.ErrNotFound)
			return
		}
		if saw != nil {
			saw(c, notes)
		}
		var through int64
		if len(notes) > 0 {
			through = notes[len(notes)-1].EventNumber
		}
		failure := ""
		if c.ID == failing {
			failure = "the endpoint answered HTTP 503"
		}
		require.NoError(t, s.SettleNotifications(ctxT(t), "w1", c.Domain, c.ID, through, failure, now, now.Add(time.Hour), time.Hour))
	}
}

// testSubscriptionOutboxPrune: retention deletes the notifications an
// endpoint accepted before the cutoff and the events nothing names any
// more; an event a pending notification names stays; numbering and seqs
// go on after pruning.
func testSubscriptionOutboxPrune(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for _, id := range []string{"ok", "down"} {
		sub := newSubscription("acme", id, store.EventTopicWorklist)
		sub.HeartbeatPeriod = 0
		require.NoError(t, s.CreateSubscription(ctx, sub))
	}
	settleAll(t, s, base, "") // handshakes
	var first []*store.Event
	for i := range 3 {
		e := worklistEvent("acme", fmt.Sprintf("p%d", i), store.EventArrived)
		e.At = base
		first = append(first, e)
	}
	require.NoError(t, s.AppendEvents(ctx, first...))
	dispatchAll(t, s)
	// MaxCount 2: two rounds deliver "ok" its three; "down" fails.
	settleAll(t, s, base, "down")
	settleAll(t, s, base, "down")

	n, err := s.PurgeBefore(ctx, base.Add(time.Hour))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, n, 3, "the three delivered notifications")
	ok, err := s.Subscription(ctx, "acme", "ok")
	require.NoError(t, err)
	assert.Equal(t, int64(3), ok.PrunedThrough)
	assert.Equal(t, int64(3), ok.EventsSinceStart)
	held, err := s.Notifications(ctx, "acme", "ok", 1, 3, 10)
	require.NoError(t, err)
	assert.Empty(t, held)
	down, err := s.Subscription(ctx, "acme", "down")
	require.NoError(t, err)
	assert.Equal(t, int64(0), down.PrunedThrough, "nothing of a failing subscription goes")
	held, err = s.Notifications(ctx, "acme", "down", 1, 3, 10)
	require.NoError(t, err)
	require.Len(t, held, 3, "the events its notifications name are kept")
	assert.Equal(t, "p0", held[0].Event.FocusID)

	// "down" recovers; the next pass prunes its notifications and the
	// events, which nothing names any more.
	settleAll(t, s, base.Add(2*time.Hour), "")
	settleAll(t, s, base.Add(2*time.Hour), "")
	_, err = s.PurgeBefore(ctx, base.Add(3*time.Hour))
	require.NoError(t, err)
	evs, err := s.EventsAfter(ctx, 0, 10)
	require.NoError(t, err)
	assert.Empty(t, evs, "dispatched events nothing names are gone")
	down, err = s.Subscription(ctx, "acme", "down")
	require.NoError(t, err)
	assert.Equal(t, int64(3), down.PrunedThrough)

	// New events continue the numbering and the log's seqs; a
	// subscription created now starts with the log as it stands.
	late := newSubscription("acme", "late", store.EventTopicWorklist)
	require.NoError(t, s.CreateSubscription(ctx, late))
	next := worklistEvent("acme", "p3", store.EventChanged)
	require.NoError(t, s.AppendEvents(ctx, next))
	assert.Greater(t, next.Seq, first[2].Seq, "seqs are never reused")
	dispatchAll(t, s)
	for id, want := range map[string]int64{"ok": 4, "down": 4, "late": 1} {
		got, err := s.Notifications(ctx, "acme", id, 1, 100, 100)
		require.NoError(t, err)
		require.Len(t, got, 1, id)
		assert.Equal(t, want, got[0].EventNumber, id)
		assert.Equal(t, "p3", got[0].Event.FocusID, id)
	}
	n, err = s.PurgeBefore(ctx, base.Add(3*time.Hour))
	require.NoError(t, err)
	assert.Zero(t, n, "idempotent; the new, undelivered notifications stay")
}

// testSubscriptionStats: counts by status and the outbox's depth and
// oldest pending event, all domains together.
func testSubscriptionStats(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	st, err := s.SubscriptionStats(ctx)
	require.NoError(t, err)
	assert.Empty(t, st.ByStatus)
	assert.Zero(t, st.Pending)
	assert.Nil(t, st.OldestPending)
	for _, d := range []string{"acme", "other"} {
		sub := newSubscription(d, "s", store.EventTopicWorklist)
		sub.HeartbeatPeriod = 0
		require.NoError(t, s.CreateSubscription(ctx, sub))
	}
	settleAll(t, s, base, "")
	require.NoError(t, s.CreateSubscription(ctx, newSubscription("acme", "new", store.EventTopicReportDelivery)))
	for i, d := range []string{"acme", "other", "other"} {
		e := worklistEvent(d, fmt.Sprintf("q%d", i), store.EventArrived)
		e.At = base.Add(time.Duration(i) * time.Minute)
		require.NoError(t, s.AppendEvents(ctx, e))
	}
	dispatchAll(t, s)
	st, err = s.SubscriptionStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]int{store.SubscriptionActive: 2, store.SubscriptionRequested: 1}, st.ByStatus)
	assert.Equal(t, int64(3), st.Pending)
	require.NotNil(t, st.OldestPending)
	assert.True(t, base.Equal(*st.OldestPending), "%v", st.OldestPending)

	settleAll(t, s, base.Add(time.Hour), "")
	st, err = s.SubscriptionStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]int{store.SubscriptionActive: 3}, st.ByStatus)
	assert.Zero(t, st.Pending)
	assert.Nil(t, st.OldestPending)
}
