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

// polled is a comment as a poll through appointment appt finds it.
func polled(appt, guid string, modified time.Time) store.PolledComment {
	return store.PolledComment{GUID: guid, Modified: modified, Event: &store.Event{FocusType: "Communication",
		FocusID: appt + "." + guid, AppointmentID: appt, Resource: []byte(`{"resourceType":"Communication"}`)}}
}

// commentEvents are the comments-topic events after seq after.
func commentEvents(t *testing.T, s store.Store, after int64) []string {
	t.Helper()
	return topicEvents(t, s, store.EventTopicComments, after)
}

func recordPoll(t *testing.T, s store.Store, owner, appt string, now time.Time, cs ...store.PolledComment) int {
	t.Helper()
	n, err := s.RecordComments(ctxT(t), "acme", owner, time.Minute, appt, cs, now)
	require.NoError(t, err)
	return n
}

// testCommentWatch: one lease at a time, kept across a hand-over and
// begun anew after a pause; a study's first poll tells only what QUBS
// modified since the watch began (everything for a study that arrived
// since); a comment is told once, whoever records it first (the bridge's
// own create, another study of the patient), and an edit once more; a
// watcher without the lease records nothing; the event and the seen
// state commit together, so a second recording neither loses nor
// repeats.
func testCommentWatch(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	_, err := s.ApplyWorklist(ctx, "acme", "", 0, []store.WorklistRow{worklistRow("acme", 1, 1), worklistRow("acme", 2, 1)}, base)
	require.NoError(t, err)
	t0 := base.Add(time.Minute)
	began, ok, err := s.TakeCommentLease(ctx, "acme", "w1", 30*time.Second, t0)
	require.NoError(t, err)
	require.True(t, ok)
	assert.True(t, began.Equal(t0), "the first watch begins now")
	_, ok, err = s.TakeCommentLease(ctx, "acme", "w2", 30*time.Second, t0.Add(time.Second))
	require.NoError(t, err)
	assert.False(t, ok, "one watcher at a time")
	require.NoError(t, s.ReleaseCommentLease(ctx, "acme", "w1"))
	began, ok, err = s.TakeCommentLease(ctx, "acme", "w2", 2*time.Minute, t0.Add(2*time.Second))
	require.NoError(t, err)
	require.True(t, ok)
	assert.True(t, began.Equal(t0), "a hand-over keeps the watch's beginning")

	studies, err := s.CommentStudies(ctx, "acme", began, nil, 10)
	require.NoError(t, err)
	require.Len(t, studies, 2)
	assert.Nil(t, studies[0].PolledAt)
	assert.Equal(t, "Patient/p1", studies[0].Patient)

	// The first poll of A001: c1 predates the watch, c2 does not.
	t1 := t0.Add(time.Minute)
	_, err = s.RecordComments(ctx, "acme", "w1", time.Minute, "A001", []store.PolledComment{polled("A001", "c2", t0.Add(30*time.Second))}, t1)
	assert.ErrorIs(t, err, store.ErrConflict, "a watcher without the lease records nothing")
	assert.Empty(t, commentEvents(t, s, 0))
	assert.Equal(t, 1, recordPoll(t, s, "w2", "A001", t1, polled("A001", "c1", base.Add(-time.Hour)), polled("A001", "c2", t0.Add(30*time.Second))))
	assert.Equal(t, []string{"created:A001.c2"}, commentEvents(t, s, 0))
	assert.Zero(t, recordPoll(t, s, "w2", "A001", t1.Add(time.Second), polled("A001", "c1", base.Add(-time.Hour)), polled("A001", "c2", t0.Add(30*time.Second))),
		"polled again: nothing new, nothing repeated")
	// Polled since the watch began: an edit and a new comment are news,
	// whatever their times.
	assert.Equal(t, 2, recordPoll(t, s, "w2", "A001", t1.Add(2*time.Second), polled("A001", "c1", base), polled("A001", "c3", time.Time{})))

	// The bridge created c4 on A002 and told it; the watch's first poll
	// of A002 finds it seen, and p1 (the patient's, seen through A001
	// first) too.
	assert.Equal(t, 1, recordPoll(t, s, "", "A002", t1, polled("A002", "c4", t1)))
	assert.Zero(t, recordPoll(t, s, "", "A002", t1, polled("A002", "c4", t1)), "a replayed create tells nothing")
	assert.Equal(t, 1, recordPoll(t, s, "w2", "A001", t1.Add(3*time.Second), polled("A001", "p1", t1)))
	assert.Zero(t, recordPoll(t, s, "w2", "A002", t1.Add(4*time.Second), polled("A002", "c4", t1), polled("A002", "p1", t1)))

	// A study that arrived after the watch began: all its comments are
	// news, and it is polled first.
	_, err = s.ApplyWorklist(ctx, "acme", "", 0, []store.WorklistRow{worklistRow("acme", 3, 1)}, t1.Add(5*time.Second))
	require.NoError(t, err)
	studies, err = s.CommentStudies(ctx, "acme", began, nil, 10)
	require.NoError(t, err)
	require.Len(t, studies, 3)
	assert.Equal(t, "A003", studies[0].AppointmentID, "an arrival goes first")
	only, err := s.CommentStudies(ctx, "acme", began, []string{"sr002"}, 10)
	require.NoError(t, err)
	require.Len(t, only, 1)
	assert.Equal(t, "A002", only[0].AppointmentID)
	assert.Equal(t, 1, recordPoll(t, s, "w2", "A003", t1.Add(6*time.Second), polled("A003", "c5", base)))

	assert.Equal(t, []string{"created:A001.c2", "changed:A001.c1", "created:A001.c3", "created:A002.c4", "created:A001.p1", "created:A003.c5"},
		commentEvents(t, s, 0), "each comment once, each edit once")

	// A 404 ends A003's watch: not polled since the watch began any more.
	require.NoError(t, s.EndCommentWatch(ctx, "acme", "A003"))
	studies, err = s.CommentStudies(ctx, "acme", began, nil, 10)
	require.NoError(t, err)
	for _, st := range studies {
		if st.AppointmentID == "A003" {
			assert.Nil(t, st.PolledAt)
		}
	}

	// Two minutes without a watcher (a QUBS outage's backoff): the same
	// watch goes on.
	kept, ok, err := s.TakeCommentLease(ctx, "acme", "w2", 30*time.Second, t1.Add(6*time.Second+2*time.Minute))
	require.NoError(t, err)
	require.True(t, ok)
	assert.True(t, kept.Equal(began), "a short gap keeps the watch")

	// Nobody watched for an hour: the watch begins anew.
	t2 := t1.Add(time.Hour)
	began, ok, err = s.TakeCommentLease(ctx, "acme", "w1", 30*time.Second, t2)
	require.NoError(t, err)
	require.True(t, ok)
	assert.True(t, began.Equal(t2), "a watch resumed after a pause begins anew")
	assert.Zero(t, recordPoll(t, s, "w1", "A001", t2, polled("A001", "c6", t1)), "added during the pause: the new baseline")

	_, err = s.RecordComments(ctx, "acme", "w1", time.Minute, "A001", []store.PolledComment{{GUID: "x"}}, t2)
	assert.ErrorIs(t, err, store.ErrInvalid)
	_, _, err = s.TakeCommentLease(ctx, "acme", "", time.Minute, t2)
	assert.ErrorIs(t, err, store.ErrInvalid)
}

// testReplicasComments: replicas race for the comment lease (one wins
// each round), and for the same comments (the bridge's creates and a
// watcher's poll at once): each is told exactly once.
func testReplicasComments(t *testing.T, open func(ctx context.Context) (store.Store, error)) {
	ctx := ctxT(t)
	var reps []store.Store
	for range 2 {
		s, err := open(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		reps = append(reps, s)
	}
	_, err := reps[0].ApplyWorklist(ctx, "acme", "", 0, []store.WorklistRow{worklistRow("acme", 1, 1)}, base)
	require.NoError(t, err)
	for round := range 5 {
		now := base.Add(time.Duration(round+1) * time.Hour)
		var wins sync.WaitGroup
		won := make(chan string, 4)
		for i := range 4 {
			wins.Add(1)
			go func() {
				defer wins.Done()
				owner := fmt.Sprintf("w%d-%d", round, i)
				_, ok, err := reps[i%2].TakeCommentLease(ctx, "acme", owner, 30*time.Second, now)
				assert.NoError(t, err)
				if ok {
					won <- owner
				}
			}()
		}
		wins.Wait()
		close(won)
		var owners []string
		for o := range won {
			owners = append(owners, o)
		}
		require.Len(t, owners, 1, "round %d: one watcher", round)
		// The winner polls while the bridge tells the same new comments.
		var wg sync.WaitGroup
		total := make(chan int, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				owner := ""
				if i%2 == 0 {
					owner = owners[0]
				}
				cs := []store.PolledComment{polled("A001", fmt.Sprintf("r%d-a", round), now), polled("A001", fmt.Sprintf("r%d-b", round), now)}
				n, err := reps[i%2].RecordComments(ctx, "acme", owner, 30*time.Second, "A001", cs, now.Add(time.Second))
				assert.NoError(t, err)
				total <- n
			}()
		}
		wg.Wait()
		close(total)
		sum := 0
		for n := range total {
			sum += n
		}
		assert.Equal(t, 2, sum, "round %d: each comment told once", round)
		require.NoError(t, reps[0].ReleaseCommentLease(ctx, "acme", owners[0]))
		require.NoError(t, reps[1].ReleaseCommentLease(ctx, "acme", owners[0]))
	}
	assert.Len(t, commentEvents(t, reps[0], 0), 10)
}
