package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/worklist"
)

// commentRig is the bridge with subscriptions, the index on a small
// worklist (walked once) and a comment watch driven by hand.
type commentRig struct {
	*subsRig
	syncer *worklist.Syncer
	domain string
}

const commentRigStudies = 30

func newCommentRig(t *testing.T, withDB func(testing.TB) envOption) *commentRig {
	t.Helper()
	var syncer *worklist.Syncer
	r := newSubsRig(t, withDB, true, withIndex(t, &syncer),
		func(so *qubssim.Options, _ *qubs.Config, _ *server.Config) { so.Appointments = commentRigStudies })
	domain := r.base[strings.LastIndex(r.base, "/")+1:]
	syncer.Add(domain)
	syncIndex(t, syncer, domain)
	return &commentRig{subsRig: r, syncer: syncer, domain: domain}
}

func (r *commentRig) watch(owner string) *worklist.CommentWatch {
	// A batch is five seconds' worth of calls: at 6/s, the whole worklist.
	return &worklist.CommentWatch{Store: r.st, QUBS: r.syncer.QUBS.(worklist.CommentQUBS), Syncer: r.syncer, Owner: owner,
		Rate: commentRigStudies / 5}
}

// cycle polls every study of the worklist once (one batch: the domain
// has fewer studies than commentRigStudies), with no wait between calls.
func (r *commentRig) cycle(t *testing.T, w *worklist.CommentWatch) worklist.CommentResult {
	t.Helper()
	res, err := w.PollOnce(context.Background(), r.domain, 0)
	require.NoError(t, err)
	return res
}

// commentCalls counts the comment lists the simulator answered.
func commentCalls(sim *qubssim.Server) int {
	n := 0
	for _, rq := range sim.Requests() {
		if rq.Method == http.MethodGet && strings.HasSuffix(rq.Route, "/comments") {
			n++
		}
	}
	return n
}

// commentFocus are the Communication ids the receiver was told, in order.
func commentFocus(t *testing.T, rcv *receiver) []string {
	t.Helper()
	var out []string
	for _, n := range rcv.notes(t) {
		for _, f := range n.focus {
			out = append(out, f[strings.LastIndex(f, "/")+1:])
		}
	}
	return out
}

// TestCommentWatch: with no comments subscription the watch costs QUBS
// nothing; once one exists, the comments already there are the baseline
// (not told), a comment added in QUBS by someone else is told exactly
// once, an edit of it once more, and a comment created through the
// bridge exactly once although the watch polls its study too; deleting
// the subscription stops the polling. Through the router, the simulator
// over HTTP and both stores.
func TestCommentWatch(t *testing.T) {
	t.Parallel()
	for name, withDB := range map[string]func(testing.TB) envOption{"sqlite": withStore, "postgres": withPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newCommentRig(t, withDB)
			w := r.watch("test-watch")
			before := commentCalls(r.sim)
			res := r.cycle(t, w)
			assert.Zero(t, res.Calls, "no comments subscription: no polling")
			assert.False(t, res.Held)
			assert.Equal(t, before, commentCalls(r.sim))

			rcv := newReceiver(t)
			id := r.subscribe(t, subscriptionJSON(store.EventTopicComments, rcv.srv.URL, store.PayloadFullResource, nil, nil))
			eventually(t, "the handshake", func() bool { return rcv.count() == 1 })
			res = r.cycle(t, w)
			studies := len(r.sim.PendingIDs(r.domain))
			require.Less(t, studies, commentRigStudies)
			assert.Equal(t, studies, res.Calls, "one call per study")
			assert.Zero(t, res.Events, "what QUBS had before the watch is not news")
			assert.Equal(t, before+studies, commentCalls(r.sim))

			// Someone else adds an alert in QUBS.
			ids := r.sim.PendingIDs(r.domain)
			other := r.sim.AddComment(r.domain, ids[3], "", "Contrast allergy "+phiMarker, true)
			require.NotNil(t, other)
			res = r.cycle(t, w)
			assert.Equal(t, 1, res.Events)
			eventually(t, "the alert told", func() bool { return rcv.count() == 2 })
			ns := rcv.notes(t)
			require.Len(t, ns[1].entries, 1)
			got := ns[1].entries[0]["resource"].(map[string]any)
			assert.Equal(t, "Communication", got["resourceType"])
			assert.Contains(t, got["payload"].([]any)[0].(map[string]any)["contentString"], "Contrast allergy")
			assert.Equal(t, "POST", ns[1].entries[0]["request"].(map[string]any)["method"])

			// A comment created through the bridge: told by the create,
			// and not again by the watch.
			srID := strings.TrimPrefix(ns[1].entries[0]["resource"].(map[string]any)["basedOn"].([]any)[0].(map[string]any)["reference"].(string), "ServiceRequest/")
			body, _ := json.Marshal(map[string]any{
				"resourceType": "Communication", "status": "completed",
				"basedOn": []any{map[string]any{"reference": "ServiceRequest/" + srID}},
				"payload": []any{map[string]any{"contentString": "Called the referrer. " + phiMarker}},
			})
			created := post(t, r.base+"/Communication", body, nil)
			require.Equal(t, http.StatusCreated, created.status, "%s", created.body)
			ownID := created.json(t)["id"].(string)
			res = r.cycle(t, w)
			assert.Zero(t, res.Events, "the bridge's own comment is already told")

			// The alert is edited in QUBS: told once more, as a change.
			require.True(t, r.sim.EditComment(r.domain, other.GUID, "Contrast allergy (severe) "+phiMarker))
			res = r.cycle(t, w)
			assert.Equal(t, 1, res.Events)
			r.cycle(t, w)
			eventually(t, "every notification", func() bool { return rcv.count() == 4 })
			ns = rcv.notes(t)
			assert.Equal(t, seq(3), eventNumbers(ns), "each told once, in order")
			focus := commentFocus(t, rcv)
			require.Len(t, focus, 3)
			assert.Equal(t, focus[0], focus[2], "the edit is the alert's")
			assert.Equal(t, ownID, focus[1])
			assert.Equal(t, "PUT", ns[3].entries[0]["request"].(map[string]any)["method"])

			// No subscription, no polling.
			assert.Equal(t, http.StatusNoContent, do(t, http.MethodDelete, r.base+"/Subscription/"+id, nil, nil).status)
			before = commentCalls(r.sim)
			assert.Zero(t, r.cycle(t, w).Calls)
			assert.Equal(t, before, commentCalls(r.sim))
		})
	}
}

// TestCommentWatchReplicas: two watchers (two replicas' owners) poll one
// domain of one PostgreSQL store at once, comments arriving meanwhile:
// one holds the watch and polls, the other never does, and each comment
// is told exactly once.
func TestCommentWatchReplicas(t *testing.T) {
	t.Parallel()
	r := newCommentRig(t, withPostgres)
	rcv := newReceiver(t)
	r.subscribe(t, subscriptionJSON(store.EventTopicComments, rcv.srv.URL, store.PayloadIDOnly, nil, nil))
	eventually(t, "the handshake", func() bool { return rcv.count() == 1 })
	ids := r.sim.PendingIDs(r.domain)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var polled [2]atomic.Int64
	var events atomic.Int64
	var wg sync.WaitGroup
	for i, owner := range []string{"replica-a", "replica-b"} {
		w := r.watch(owner)
		wg.Add(1)
		go func() {
			defer wg.Done()
			pace := time.NewTicker(20 * time.Millisecond) // not a spin on two cores
			defer pace.Stop()
			for ctx.Err() == nil {
				res, err := w.PollOnce(ctx, r.domain, time.Millisecond)
				if ctx.Err() == nil {
					assert.NoError(t, err)
				}
				polled[i].Add(int64(res.Calls))
				events.Add(int64(res.Events))
				select {
				case <-ctx.Done():
				case <-pace.C:
				}
			}
		}()
	}
	const added = 6
	for k := range added {
		require.NotNil(t, r.sim.AddComment(r.domain, ids[k*4], "", "Note "+phiMarker, false))
		// Each comment waits for a poll of its study before the next.
		want := int64(k + 1)
		eventually(t, "the comment told", func() bool { return events.Load() >= want })
	}
	cancel()
	wg.Wait()
	assert.Equal(t, int64(added), events.Load(), "each comment told once")
	assert.True(t, polled[0].Load() == 0 || polled[1].Load() == 0, "one replica polls: %d and %d", polled[0].Load(), polled[1].Load())
	eventually(t, "every notification", func() bool { return rcv.count() == 1+added })
	assert.Equal(t, seq(added), eventNumbers(rcv.notes(t)))
}

// TestCommentWatchNamedStudies: when every comments subscription names
// its studies (based-on), only those are polled.
func TestCommentWatchNamedStudies(t *testing.T) {
	t.Parallel()
	r := newCommentRig(t, withStore)
	_, srID := firstPending(t, r.sim, 2)
	rcv := newReceiver(t)
	r.subscribe(t, subscriptionJSON(store.EventTopicComments, rcv.srv.URL, store.PayloadIDOnly,
		[]string{"Communication?based-on=ServiceRequest/" + srID}, nil))
	res := r.cycle(t, r.watch("test-watch"))
	assert.Equal(t, 1, res.Calls, "only the study a subscriber can match")
}

// TestCommentWatchRuns: the watch as serve runs it (its loop per domain,
// paced by the rate): a comment added through the simulator's admin API
// reaches the subscriber, and stopping the watch gives its lease up at
// once.
func TestCommentWatchRuns(t *testing.T) {
	t.Parallel()
	r := newCommentRig(t, withStore)
	rcv := newReceiver(t)
	r.subscribe(t, subscriptionJSON(store.EventTopicComments, rcv.srv.URL, store.PayloadIDOnly, nil, nil))
	eventually(t, "the handshake", func() bool { return rcv.count() == 1 })
	w := r.watch("serve-watch")
	w.Rate, w.Idle, w.MinRound = 100, 20*time.Millisecond, 100*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// Once the first round is done, a comment added now is news.
	eventually(t, "a first round", func() bool { return commentCalls(r.sim) >= len(r.sim.PendingIDs(r.domain)) })
	body := `{"domain":"` + r.domain + `","appointmentId":"` + r.sim.PendingIDs(r.domain)[5] + `","commentText":"Interpreter needed ` + phiMarker + `"}`
	res, err := http.Post(r.sim.URL+"/_sim/comments", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusCreated, res.StatusCode)
	eventually(t, "the comment told", func() bool { return rcv.count() == 2 })
	assert.Equal(t, seq(1), eventNumbers(rcv.notes(t)))

	cancel()
	<-done
	_, ok, err := r.st.TakeCommentLease(context.Background(), r.domain, "another-replica", time.Minute, time.Now())
	require.NoError(t, err)
	assert.True(t, ok, "a stopped watch gives its lease up")
}
