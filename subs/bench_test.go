package subs_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/subs"
)

// BenchmarkFanOut: one batch of 100 worklist events to 100 subscriptions,
// each with its own loopback receiver. Reported per batch: the dispatch
// (events/s and outbox rows/s of DispatchEvents) and the time until all
// 100 receivers got all 100 events (10,000 notifications, max count 10,
// so 1,000 POSTs).
func BenchmarkFanOut(b *testing.B) {
	for name, open := range map[string]func(b *testing.B) store.Store{
		"sqlite": func(b *testing.B) store.Store {
			st, err := sqlite.Open(context.Background(), b.TempDir()+"/bench.db")
			require.NoError(b, err)
			b.Cleanup(func() { st.Close() })
			return st
		},
		"postgres": func(b *testing.B) store.Store { return pgtest.Open(b) },
	} {
		b.Run(name, func(b *testing.B) { benchFanOut(b, open(b)) })
	}
}

func benchFanOut(b *testing.B, st store.Store) {
	const subscriptions, events = 100, 100
	ctx := context.Background()
	var received atomic.Int64
	hook := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { received.Add(1) })
	for i := range subscriptions {
		rcv := httptest.NewServer(hook)
		b.Cleanup(rcv.Close)
		require.NoError(b, st.CreateSubscription(ctx, &store.Subscription{Domain: "acme", ID: fmt.Sprintf("s%03d", i),
			Topic: store.EventTopicWorklist, Criteria: []string{"ServiceRequest?priority=stat"}, Endpoint: rcv.URL,
			Content: store.PayloadIDOnly, Timeout: 5 * time.Second, MaxCount: 10, Resource: []byte(`{"resourceType":"Subscription"}`)}))
	}
	sender := &subs.Sender{Store: st, Client: (&subs.Policy{AllowLoopback: true}).Client(), PollInterval: 5 * time.Millisecond}
	disp := &subs.Dispatcher{Store: st}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); sender.Run(runCtx) }()
	b.Cleanup(func() { cancel(); <-done })
	waitFor := func(n int64) {
		for received.Load() < n {
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(subscriptions) // the handshakes
	sr := []byte(`{"resourceType":"ServiceRequest","id":"x","status":"active","intent":"order","priority":"stat","subject":{"reference":"Patient/p"}}`)
	var dispatch, deliver time.Duration
	b.ResetTimer()
	for i := range b.N {
		evs := make([]*store.Event, events)
		for j := range evs {
			evs[j] = &store.Event{Domain: "acme", Topic: store.EventTopicWorklist, Kind: store.EventChanged,
				FocusType: "ServiceRequest", FocusID: fmt.Sprintf("sr-%d-%d", i, j), Resource: sr}
		}
		require.NoError(b, st.AppendEvents(ctx, evs...))
		start := time.Now()
		n, err := disp.DispatchAll(ctx)
		require.NoError(b, err)
		require.Equal(b, subscriptions*events, n)
		dispatch += time.Since(start)
		sender.Kick()
		want := received.Load() + subscriptions*events/10
		waitFor(want)
		deliver += time.Since(start)
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return d.Seconds() / float64(b.N) }
	b.ReportMetric(events/per(dispatch), "events/s")
	b.ReportMetric(subscriptions*events/per(dispatch), "outbox-rows/s")
	b.ReportMetric(per(deliver)*1000, "ms-to-deliver-all")
}
