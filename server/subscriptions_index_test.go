package server_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/worklist"
)

// TestSubscriptionWorklistFromIndex joins the two halves of the live
// worklist: studies arrive in and leave the simulator's worklist (churn),
// the index's sync walks it and appends worklist events, the dispatcher
// numbers them for each subscription whose criteria match, and the
// receivers get them: every arrival and departure once, in order, and a
// CT-only subscription exactly the CT ones. On both stores.
func TestSubscriptionWorklistFromIndex(t *testing.T) {
	t.Parallel()
	for name, withDB := range map[string]func(testing.TB) envOption{"sqlite": withStore, "postgres": withPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var syncer *worklist.Syncer
			r := newSubsRig(t, withDB, true, withIndex(t, &syncer))
			domain := strings.TrimPrefix(r.base[strings.LastIndex(r.base, "/"):], "/")
			syncIndex(t, syncer, domain) // the seeded worklist: before any subscription

			everything, onlyCT := newReceiver(t), newReceiver(t)
			r.subscribe(t, subscriptionJSON(store.EventTopicWorklist, everything.srv.URL, store.PayloadIDOnly, nil, nil))
			r.subscribe(t, subscriptionJSON(store.EventTopicWorklist, onlyCT.srv.URL, store.PayloadFullResource, []string{"ServiceRequest?modality=CT"}, nil))
			eventually(t, "the handshakes", func() bool { return everything.count() == 1 && onlyCT.count() == 1 })
			after := lastSeq(t, r.st)

			// Churn until this domain has seen arrivals and departures.
			var moved []string
			for range 50 {
				for _, ev := range r.sim.ChurnStep(4) {
					if ev.Domain == domain && (ev.Kind == qubssim.ChurnArrived || ev.Kind == qubssim.ChurnLeft) {
						id, err := mapping.ServiceRequestID(ev.AppointmentID)
						require.NoError(t, err)
						moved = append(moved, id)
					}
				}
				if len(moved) >= 8 {
					break
				}
			}
			require.NotEmpty(t, moved)
			res := syncIndex(t, syncer, domain)
			t.Logf("sync: %+v", res)

			// What the sync appended is what must be told: each moved
			// study once (a change appends its own event too).
			var told, ct []string
			for _, e := range eventsAfter(t, r.st, after) {
				if e.Domain != domain || e.Topic != store.EventTopicWorklist {
					continue
				}
				told = append(told, e.FocusID)
				if modalityOf(decodeMap(t, e.Resource)) == "CT" {
					ct = append(ct, e.FocusID)
				}
			}
			for _, id := range moved {
				assert.Contains(t, told, id, "every arrival and departure is an event")
			}
			eventually(t, "every notification", func() bool {
				return everything.count() == 1+len(told) && onlyCT.count() == 1+len(ct)
			})
			focus := func(rcv *receiver) []string {
				ns := rcv.notes(t)
				assert.Equal(t, seq(len(ns)-1), eventNumbers(ns), "numbered 1.. with no gap or repeat")
				var ids []string
				for _, n := range ns[1:] {
					require.Len(t, n.focus, 1)
					ids = append(ids, n.focus[0][strings.LastIndex(n.focus[0], "/")+1:])
				}
				return ids
			}
			assert.Equal(t, told, focus(everything), "in the order of the log")
			assert.Equal(t, ct, focus(onlyCT))
			// Arrivals and changes carry the ServiceRequest; a departure
			// only its id (it is no longer on the worklist).
			withResource := 0
			for _, n := range onlyCT.notes(t)[1:] {
				if res, ok := n.entries[0]["resource"].(map[string]any); ok {
					assert.Equal(t, "CT", modalityOf(res))
					withResource++
				}
			}
			assert.Positive(t, withResource)
			assert.True(t, slices.IsSorted(eventNumbers(everything.notes(t))))
		})
	}
}

func lastSeq(t *testing.T, st store.Store) int64 {
	t.Helper()
	evs := eventsAfter(t, st, 0)
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

func eventsAfter(t *testing.T, st store.Store, after int64) []store.Event {
	t.Helper()
	var out []store.Event
	for {
		evs, err := st.EventsAfter(context.Background(), after, 1000)
		require.NoError(t, err)
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
		after = evs[len(evs)-1].Seq
	}
}

func decodeMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	m := map[string]any{}
	if len(b) > 0 {
		require.NoError(t, json.Unmarshal(b, &m))
	}
	return m
}
