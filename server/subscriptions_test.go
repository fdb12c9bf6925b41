package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe/observetest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/retention"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/subs"
)

// receiver is a rest-hook endpoint recording what it is sent; it answers
// status (200 when 0).
type receiver struct {
	srv    *httptest.Server
	status atomic.Int32
	mu     sync.Mutex
	got    []received
	// checked counts the bodies already validated.
	checked int
}

type received struct {
	header http.Header
	body   []byte
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		if st := int(r.status.Load()); st != 0 {
			w.WriteHeader(st)
			return
		}
		r.mu.Lock()
		r.got = append(r.got, received{header: req.Header.Clone(), body: b})
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// note is one received notification, decoded.
type note struct {
	typ     string
	since   string
	numbers []int64
	focus   []string
	// entries are the Bundle's entries after the status.
	entries []map[string]any
	header  http.Header
}

// count is how many POSTs the receiver took.
func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// notes decodes what the receiver got, each body checked as strict R4
// (once: the check is costly, and tests poll).
func (r *receiver) notes(t testing.TB) []note {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for ; r.checked < len(r.got); r.checked++ {
		fhirtest.RequireValidR4(t, r.got[r.checked].body)
	}
	var out []note
	for _, g := range r.got {
		out = append(out, decodeNotification(t, g.body, g.header))
	}
	return out
}

func decodeNotification(t testing.TB, body []byte, h http.Header) note {
	t.Helper()
	var b struct {
		ResourceType, Type string
		Meta               struct{ Profile []string }
		Entry              []map[string]any
	}
	require.NoError(t, json.Unmarshal(body, &b))
	require.Equal(t, "Bundle", b.ResourceType)
	require.Equal(t, "history", b.Type)
	require.NotEmpty(t, b.Entry)
	st := b.Entry[0]["resource"].(map[string]any)
	require.Equal(t, "Parameters", st["resourceType"], "the SubscriptionStatus comes first")
	n := note{header: h, entries: []map[string]any{}}
	for _, e := range b.Entry[1:] {
		n.entries = append(n.entries, e)
	}
	for _, p := range st["parameter"].([]any) {
		pm := p.(map[string]any)
		switch pm["name"] {
		case "type":
			n.typ = pm["valueCode"].(string)
		case "events-since-subscription-start":
			n.since = pm["valueString"].(string)
		case "notification-event":
			for _, part := range pm["part"].([]any) {
				pp := part.(map[string]any)
				switch pp["name"] {
				case "event-number":
					num, err := strconv.ParseInt(pp["valueString"].(string), 10, 64)
					require.NoError(t, err)
					n.numbers = append(n.numbers, num)
				case "focus":
					n.focus = append(n.focus, pp["valueReference"].(map[string]any)["reference"].(string))
				}
			}
		}
	}
	return n
}

// eventNumbers are the numbers of the event notifications, in arrival
// order.
func eventNumbers(ns []note) []int64 {
	var out []int64
	for _, n := range ns {
		if n.typ == subs.TypeEvent {
			out = append(out, n.numbers...)
		}
	}
	return out
}

func seq(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i + 1)
	}
	return out
}

// subsRig is the bridge with subscriptions: its store, the sender and
// the dispatcher (running unless the test drives them by hand).
type subsRig struct {
	*env
	st     store.Store
	sender *subs.Sender
	disp   *subs.Dispatcher
}

func newSubsRig(t *testing.T, withDB func(testing.TB) envOption, run bool, more ...envOption) *subsRig {
	t.Helper()
	r := &subsRig{sender: &subs.Sender{Name: "test-sender", PollInterval: 20 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond}}
	policy := &subs.Policy{AllowLoopback: true}
	opts := append([]envOption{withDB(t)}, more...)
	r.env = newEnv(t, append(opts, func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		r.st = sc.Store
		r.sender.Logger = sc.Logger
		sc.SubscriptionPolicy = policy
		sc.SubscriptionKick = r.sender.Kick
	})...)
	base := r.srv.URL + "/fhir/"
	r.sender.Store, r.sender.Client = r.st, policy.Client()
	r.sender.Base = func(domain string) string { return base + domain }
	r.sender.Resolve = r.bridge.NotificationFocus(r.sender.Base)
	r.disp = &subs.Dispatcher{Store: r.st, PollInterval: 20 * time.Millisecond, Dispatched: func(int, int) { r.sender.Kick() }}
	if run {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); r.sender.Run(ctx) }()
		go func() { defer wg.Done(); r.disp.Run(ctx) }()
		t.Cleanup(func() { cancel(); wg.Wait() })
	}
	return r
}

// subscriptionJSON is a backport Subscription.
func subscriptionJSON(topic, endpoint, content string, criteria []string, extra map[string]any) []byte {
	crit := []any{}
	for _, c := range criteria {
		crit = append(crit, map[string]any{"url": subs.ExtFilterCriteria, "valueString": c})
	}
	ch := map[string]any{
		"extension": []any{
			map[string]any{"url": subs.ExtTimeout, "valueUnsignedInt": 5},
			map[string]any{"url": subs.ExtMaxCount, "valuePositiveInt": 1},
		},
		"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
		"_payload": map[string]any{"extension": []any{map[string]any{"url": subs.ExtPayloadContent, "valueCode": content}}},
		"header":   []any{"Authorization: Bearer receiver-secret"},
	}
	s := map[string]any{
		"resourceType": "Subscription",
		"meta":         map[string]any{"profile": []any{subs.ProfileSubscription}},
		"status":       "requested", "reason": "test", "criteria": subs.TopicURL(topic), "channel": ch,
	}
	if len(crit) > 0 {
		s["_criteria"] = map[string]any{"extension": crit}
	}
	for k, v := range extra {
		if strings.HasPrefix(k, "channel.") {
			ch[strings.TrimPrefix(k, "channel.")] = v
			continue
		}
		s[k] = v
	}
	b, _ := json.Marshal(s)
	return b
}

func (r *subsRig) subscribe(t *testing.T, body []byte) string {
	t.Helper()
	res := post(t, r.base+"/Subscription", body, nil)
	require.Equal(t, http.StatusCreated, res.status, "%s", res.body)
	m := res.json(t)
	assert.Equal(t, "requested", m["status"])
	assert.NotContains(t, string(res.body), "receiver-secret", "headers are never served back")
	return m["id"].(string)
}

// TestSubscriptionReportDelivery: a subscription to the report-delivery
// topic gets its handshake, then one notification per report delivered
// to the simulator, full-resource, with its custom header; $status,
// $events, search, read and delete answer per the IG. On both stores.
func TestSubscriptionReportDelivery(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, withDB func(testing.TB) envOption) {
		r := newSubsRig(t, withDB, true)
		rcv := newReceiver(t)
		id := r.subscribe(t, subscriptionJSON(store.EventTopicReportDelivery, rcv.srv.URL+"/hook", store.PayloadFullResource, nil, nil))
		eventually(t, "the handshake", func() bool { return rcv.count() == 1 })
		hs := rcv.notes(t)[0]
		assert.Equal(t, subs.TypeHandshake, hs.typ)
		assert.Equal(t, "Bearer receiver-secret", hs.header.Get("Authorization"))
		assert.Equal(t, "application/fhir+json", hs.header.Get("Content-Type"))
		eventually(t, "active", func() bool { return get(t, r.base+"/Subscription/"+id).json(t)["status"] == "active" })

		var reports []string
		for i := range 3 {
			_, srID := firstPending(t, r.sim, 11+i)
			res := post(t, r.base+"/DiagnosticReport", report{srID: srID, status: "final", text: "Final " + phiMarker}.json(), nil)
			require.Equal(t, http.StatusCreated, res.status, "%s", res.body)
			reports = append(reports, res.json(t)["id"].(string))
		}
		eventually(t, "three notifications", func() bool { return rcv.count() == 4 })
		ns := rcv.notes(t)
		assert.Equal(t, seq(3), eventNumbers(ns), "every event once, in order")
		var focus []string
		for _, n := range ns[1:] {
			require.Len(t, n.entries, 1)
			res := n.entries[0]["resource"].(map[string]any)
			assert.Equal(t, "DiagnosticReport", res["resourceType"])
			assert.Contains(t, fmt.Sprint(res["extension"]), "delivered", "served with its delivery state")
			focus = append(focus, strings.TrimPrefix(n.focus[0], r.base+"/DiagnosticReport/"))
		}
		assert.ElementsMatch(t, reports, focus)

		st := get(t, r.base+"/Subscription/"+id+"/$status")
		require.Equal(t, http.StatusOK, st.status, "%s", st.body)
		assert.Contains(t, string(st.body), `"valueString":"3"`, "events-since-subscription-start")
		assert.Contains(t, string(st.body), `"valueCode":"query-status"`)
		ev := get(t, r.base+"/Subscription/"+id+"/$events?eventsSinceNumber=2&content=id-only")
		require.Equal(t, http.StatusOK, ev.status, "%s", ev.body)
		qe := decodeNotification(t, ev.body, nil)
		assert.Equal(t, subs.TypeQueryEvent, qe.typ)
		assert.Equal(t, []int64{2, 3}, qe.numbers)
		assert.Nil(t, qe.entries[0]["resource"], "id-only as asked")
		assert.Equal(t, http.StatusBadRequest, get(t, r.base+"/Subscription/"+id+"/$events?eventsSinceNumber=x").status)

		list := get(t, r.base+"/Subscription?status=active").json(t)
		assert.Len(t, entries(list, "match"), 1)
		list = get(t, r.base+"/Subscription?status=error").json(t)
		assert.Empty(t, entries(list, "match"))
		list = get(t, r.base+"/Subscription?url="+rcv.srv.URL+"/hook").json(t)
		assert.Len(t, entries(list, "match"), 1)

		assert.Equal(t, http.StatusNoContent, do(t, http.MethodDelete, r.base+"/Subscription/"+id, nil, nil).status)
		assert.Equal(t, http.StatusNotFound, get(t, r.base+"/Subscription/"+id).status)
		assert.Equal(t, http.StatusNotFound, get(t, r.base+"/Subscription/"+id+"/$status").status)
		assert.Equal(t, http.StatusNotFound, do(t, http.MethodDelete, r.base+"/Subscription/"+id, nil, nil).status)
	})
}

// worklistEvents appends one worklist event per ServiceRequest the bridge
// serves, as the index sync does, and returns the ids of those whose
// modality is CT.
func worklistEvents(t *testing.T, r *subsRig, n int) (all, ct []string) {
	t.Helper()
	b := get(t, r.base+"/ServiceRequest?_count="+strconv.Itoa(n)).json(t)
	var evs []*store.Event
	for _, e := range entries(b, "match") {
		res := resourceOf(e)
		raw, err := json.Marshal(res)
		require.NoError(t, err)
		id := res["id"].(string)
		evs = append(evs, &store.Event{Domain: "acme", Topic: store.EventTopicWorklist, Kind: store.EventArrived,
			FocusType: "ServiceRequest", FocusID: id, Resource: raw})
		all = append(all, id)
		if modalityOf(res) == "CT" {
			ct = append(ct, id)
		}
	}
	require.NoError(t, r.st.AppendEvents(context.Background(), evs...))
	return all, ct
}

// modalityOf is the DCM code of a ServiceRequest's orderDetail.
func modalityOf(sr map[string]any) string {
	ods, _ := sr["orderDetail"].([]any)
	for _, od := range ods {
		cs, _ := od.(map[string]any)["coding"].([]any)
		for _, c := range cs {
			cm := c.(map[string]any)
			if cm["system"] == "http://dicom.nema.org/resources/ontology/DCM" {
				return cm["code"].(string)
			}
		}
	}
	return ""
}

// TestSubscriptionWorklist: worklist events (appended through the store
// as the index sync appends them) reach the subscriptions whose criteria
// they match, each exactly once, in order; id-only carries references,
// empty nothing.
func TestSubscriptionWorklist(t *testing.T) {
	t.Parallel()
	r := newSubsRig(t, withStore, true)
	everything, onlyCT, empty := newReceiver(t), newReceiver(t), newReceiver(t)
	r.subscribe(t, subscriptionJSON(store.EventTopicWorklist, everything.srv.URL, store.PayloadIDOnly, nil, nil))
	r.subscribe(t, subscriptionJSON(store.EventTopicWorklist, onlyCT.srv.URL, store.PayloadFullResource, []string{"ServiceRequest?modality=CT"}, nil))
	r.subscribe(t, subscriptionJSON(store.EventTopicWorklist, empty.srv.URL, store.PayloadEmpty, nil, nil))
	eventually(t, "the handshakes", func() bool {
		return everything.count() == 1 && onlyCT.count() == 1 && empty.count() == 1
	})
	all, ct := worklistEvents(t, r, 40)
	require.NotEmpty(t, ct, "the seeded worklist has CT studies")
	require.Less(t, len(ct), len(all))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("received %d/%d, %d/%d, %d/%d", len(eventNumbers(everything.notes(t))), len(all),
				len(eventNumbers(onlyCT.notes(t))), len(ct), len(eventNumbers(empty.notes(t))), len(all))
		}
	})
	// Max count 1: one POST per event, after the handshake.
	eventually(t, "every notification", func() bool {
		return everything.count() == 1+len(all) && onlyCT.count() == 1+len(ct) && empty.count() == 1+len(all)
	})
	check := func(rcv *receiver, want []string, content string) {
		ns := rcv.notes(t)
		assert.Equal(t, seq(len(want)), eventNumbers(ns))
		var got []string
		for _, n := range ns[1:] {
			if content == store.PayloadEmpty {
				assert.Empty(t, n.focus)
				assert.Empty(t, n.entries)
				continue
			}
			require.Len(t, n.focus, 1)
			got = append(got, n.focus[0][strings.LastIndex(n.focus[0], "/")+1:])
			_, hasResource := n.entries[0]["resource"]
			assert.Equal(t, content == store.PayloadFullResource, hasResource)
		}
		if content != store.PayloadEmpty {
			assert.Equal(t, want, got)
		}
	}
	check(everything, all, store.PayloadIDOnly)
	check(onlyCT, ct, store.PayloadFullResource)
	check(empty, all, store.PayloadEmpty)
}

// TestSubscriptionErrorAndRecovery: the receiver fails; attempts back
// off; once failing for ErrorAfter the subscription is in error and says
// why in $status and the resource; events keep being numbered; when the
// receiver is back the next attempt delivers them all, in order, none
// skipped. The sender runs by hand on a fake clock.
func TestSubscriptionErrorAndRecovery(t *testing.T) {
	t.Parallel()
	r := newSubsRig(t, withStore, false)
	var now atomic.Int64
	now.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro())
	clock := func() time.Time { return time.UnixMicro(now.Load()).UTC() }
	advance := func(d time.Duration) { now.Add(d.Microseconds()) }
	r.sender.Now, r.sender.ErrorAfter, r.sender.MinBackoff, r.sender.MaxBackoff = clock, time.Hour, time.Minute, 4*time.Minute
	ctx := context.Background()

	rcv := newReceiver(t)
	rcv.status.Store(http.StatusServiceUnavailable)
	id := r.subscribe(t, subscriptionJSON(store.EventTopicWorklist, rcv.srv.URL, store.PayloadIDOnly, nil, nil))
	sent, err := r.sender.SendOnce(ctx)
	require.NoError(t, err)
	require.True(t, sent, "the handshake is attempted")
	sent, err = r.sender.SendOnce(ctx)
	require.NoError(t, err)
	assert.False(t, sent, "a failed subscription waits for its backoff")

	all, _ := worklistEvents(t, r, 10)
	_, err = r.disp.DispatchAll(ctx)
	require.NoError(t, err)
	attempts := 1
	for range 30 {
		advance(5 * time.Minute)
		sent, err := r.sender.SendOnce(ctx)
		require.NoError(t, err)
		require.True(t, sent)
		attempts++
		if get(t, r.base+"/Subscription/"+id).json(t)["status"] == "error" {
			break
		}
	}
	sub := get(t, r.base+"/Subscription/"+id).json(t)
	require.Equal(t, "error", sub["status"], "failing for an hour puts it in error")
	assert.Contains(t, sub["error"], "HTTP 503")
	st := get(t, r.base+"/Subscription/"+id+"/$status")
	assert.Contains(t, string(st.body), `"valueCode":"error"`)
	assert.Contains(t, string(st.body), "HTTP 503")
	stored, err := r.st.Subscription(ctx, "acme", id)
	require.NoError(t, err)
	assert.Equal(t, attempts, stored.Attempts)

	// More events while in error are numbered too.
	more, _ := worklistEvents(t, r, 15)
	_, err = r.disp.DispatchAll(ctx)
	require.NoError(t, err)

	rcv.status.Store(0)
	for range 100 {
		advance(5 * time.Minute)
		if sent, err := r.sender.SendOnce(ctx); err != nil || !sent {
			require.NoError(t, err)
			break
		}
	}
	ns := rcv.notes(t)
	assert.Equal(t, seq(len(all)+len(more)), eventNumbers(ns), "nothing skipped, nothing repeated")
	assert.Equal(t, "active", get(t, r.base+"/Subscription/"+id).json(t)["status"])
	assert.NotContains(t, get(t, r.base+"/Subscription/"+id).json(t), "error")

	// An idle active subscription gets heartbeats when it asked for them;
	// this one did not.
	advance(time.Hour)
	sent, err = r.sender.SendOnce(ctx)
	require.NoError(t, err)
	assert.False(t, sent)
}

// TestSubscriptionRefused: what the bridge cannot honour is a 400 with an
// OperationOutcome, endpoints included (SSRF).
func TestSubscriptionRefused(t *testing.T) {
	t.Parallel()
	r := newSubsRig(t, withStore, false)
	ok := "http://127.0.0.1:9/hook"
	cases := map[string][]byte{
		"unknown topic": []byte(strings.Replace(string(subscriptionJSON(store.EventTopicWorklist, ok, "id-only", nil, nil)),
			"SubscriptionTopic/worklist", "SubscriptionTopic/nope", 1)),
		"criteria of another type": subscriptionJSON(store.EventTopicWorklist, ok, "id-only", []string{"Patient?name=x"}, nil),
		"unknown parameter":        subscriptionJSON(store.EventTopicWorklist, ok, "id-only", []string{"ServiceRequest?colour=red"}, nil),
		"bad date":                 subscriptionJSON(store.EventTopicWorklist, ok, "id-only", []string{"ServiceRequest?occurrence=soon"}, nil),
		"websocket":                subscriptionJSON(store.EventTopicWorklist, ok, "id-only", nil, map[string]any{"channel.type": "websocket"}),
		"xml payload":              subscriptionJSON(store.EventTopicWorklist, ok, "id-only", nil, map[string]any{"channel.payload": "application/fhir+xml"}),
		"unknown content":          subscriptionJSON(store.EventTopicWorklist, ok, "everything", nil, nil),
		"end":                      subscriptionJSON(store.EventTopicWorklist, ok, "id-only", nil, map[string]any{"end": "2030-01-01T00:00:00Z"}),
		"status off":               subscriptionJSON(store.EventTopicWorklist, ok, "id-only", nil, map[string]any{"status": "off"}),
		"header without a value":   subscriptionJSON(store.EventTopicWorklist, ok, "id-only", nil, map[string]any{"channel.header": []string{"X-Key"}}),
		"header the bridge sets":   subscriptionJSON(store.EventTopicWorklist, ok, "id-only", nil, map[string]any{"channel.header": []string{"Host: evil"}}),
		"http to a public host":    subscriptionJSON(store.EventTopicWorklist, "http://93.184.216.34/hook", "id-only", nil, nil),
		"private address":          subscriptionJSON(store.EventTopicWorklist, "https://10.0.0.1/hook", "id-only", nil, nil),
		"link-local (metadata)":    subscriptionJSON(store.EventTopicWorklist, "https://169.254.169.254/", "id-only", nil, nil),
		"multicast":                subscriptionJSON(store.EventTopicWorklist, "https://224.0.0.1/", "id-only", nil, nil),
		"unspecified":              subscriptionJSON(store.EventTopicWorklist, "https://0.0.0.0/", "id-only", nil, nil),
		"credentials in the URL":   subscriptionJSON(store.EventTopicWorklist, "http://u:p@127.0.0.1:9/", "id-only", nil, nil),
		"timeout beyond the limit": subscriptionJSON(store.EventTopicWorklist, ok, "id-only", nil, map[string]any{"channel.extension": []any{
			map[string]any{"url": subs.ExtTimeout, "valueUnsignedInt": 3600}}}),
		"not a Subscription": []byte(`{"resourceType":"Patient"}`),
	}
	for name, body := range cases {
		res := post(t, r.base+"/Subscription", body, nil)
		assert.Equal(t, http.StatusBadRequest, res.status, "%s: %s", name, res.body)
		if res.status == http.StatusBadRequest {
			assert.NotEmpty(t, outcome(t, res), name)
		}
	}
	list := get(t, r.base+"/Subscription").json(t)
	assert.Empty(t, entries(list, "match"), "nothing refused was stored")

	// The CapabilityStatement lists the topics and operations.
	md := get(t, r.base+"/metadata")
	for _, u := range subs.TopicURLs {
		assert.Contains(t, string(md.body), u)
	}
	assert.Contains(t, string(md.body), subs.ExtTopicCanonical)
	assert.Contains(t, string(md.body), subs.OperationStatus)
	assert.Contains(t, string(md.body), subs.OperationEvents)
	assert.Contains(t, string(md.body), subs.ServerCapability)
}

// TestSubscriptionEventsPruned: once retention pruned a subscription's
// delivered notifications, $events asking for them by number answers 410
// with the oldest number held, the default range is what is held, and the
// next event goes on from the last number. On both stores.
func TestSubscriptionEventsPruned(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, withDB func(testing.TB) envOption) {
		r := newSubsRig(t, withDB, true)
		rcv := newReceiver(t)
		id := r.subscribe(t, subscriptionJSON(store.EventTopicReportDelivery, rcv.srv.URL+"/hook", store.PayloadIDOnly, nil, nil))
		deliver := func(i int) {
			_, srID := firstPending(t, r.sim, 21+i)
			res := post(t, r.base+"/DiagnosticReport", report{srID: srID, status: "final", text: "Final " + phiMarker}.json(), nil)
			require.Equal(t, http.StatusCreated, res.status, "%s", res.body)
		}
		deliver(0)
		deliver(1)
		eventually(t, "two notifications", func() bool { return len(eventNumbers(rcv.notes(t))) == 2 })
		evURL := r.base + "/Subscription/" + id + "/$events"
		require.Len(t, decodeNotification(t, get(t, evURL).body, nil).numbers, 2, "held before the retention pass")
		// The receiver sees a notification before the sender records it as
		// sent; retention removes only sent ones, so wait for the record.
		eventually(t, "both notifications recorded as sent", func() bool {
			ns, err := r.st.Notifications(context.Background(), "acme", id, 1, 2, 10)
			require.NoError(t, err)
			sent := 0
			for _, n := range ns {
				if n.SentAt != nil {
					sent++
				}
			}
			return sent == 2
		})

		// The retention pass, as if run a day later.
		n, err := retention.Purge(context.Background(), r.st, time.Hour, time.Now().Add(24*time.Hour))
		require.NoError(t, err)
		assert.Positive(t, n)

		gone := get(t, evURL+"?eventsSinceNumber=1")
		require.Equal(t, http.StatusGone, gone.status, "%s", gone.body)
		assert.Contains(t, outcome(t, gone), "the oldest the bridge holds is 3")
		assert.Equal(t, http.StatusGone, get(t, evURL+"?eventsSinceNumber=2&eventsUntilNumber=2").status)
		held := get(t, evURL)
		require.Equal(t, http.StatusOK, held.status, "%s", held.body)
		fhirtest.RequireValidR4(t, held.body)
		assert.Empty(t, decodeNotification(t, held.body, nil).numbers, "nothing held, and no error by default")
		assert.Contains(t, string(get(t, r.base+"/Subscription/"+id+"/$status").body), `"valueString":"2"`,
			"events-since-subscription-start survives the pruning")

		deliver(2)
		eventually(t, "the third notification", func() bool { return len(eventNumbers(rcv.notes(t))) == 3 })
		assert.Equal(t, seq(3), eventNumbers(rcv.notes(t)), "numbering goes on after pruning")
		after := get(t, evURL+"?eventsSinceNumber=3")
		require.Equal(t, http.StatusOK, after.status, "%s", after.body)
		assert.Equal(t, []int64{3}, decodeNotification(t, after.body, nil).numbers)
	})
}

// TestSubscriptionIdempotentCreate: a create retried with its
// Idempotency-Key, one after another or at once, makes one subscription
// and answers its 201 again; the key with another Subscription is a 422;
// If-None-Exist is evaluated as a Subscription search. On both stores.
func TestSubscriptionIdempotentCreate(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, withDB func(testing.TB) envOption) {
		r := newSubsRig(t, withDB, false)
		rcv := newReceiver(t)
		body := subscriptionJSON(store.EventTopicReportDelivery, rcv.srv.URL+"/hook", store.PayloadIDOnly, nil, nil)
		key := func(k string) http.Header { return http.Header{"Idempotency-Key": {k}} }
		count := func() int { return len(entries(get(t, r.base+"/Subscription").json(t), "match")) }

		first := post(t, r.base+"/Subscription", body, key("create-1"))
		require.Equal(t, http.StatusCreated, first.status, "%s", first.body)
		id := first.json(t)["id"].(string)
		again := post(t, r.base+"/Subscription", body, key("create-1"))
		require.Equal(t, http.StatusCreated, again.status, "%s", again.body)
		assert.Equal(t, id, again.json(t)["id"], "the retry answers the first create")
		assert.Equal(t, first.header.Get("Location"), again.header.Get("Location"))
		assert.Equal(t, 1, count())

		// Retries racing each other (and two replicas would race alike).
		const racers = 6
		ids := make(chan string, racers)
		var wg sync.WaitGroup
		for range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodPost, r.base+"/Subscription", strings.NewReader(string(body)))
				req.Header.Set("Content-Type", "application/fhir+json")
				req.Header.Set("Idempotency-Key", "create-2")
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					ids <- "error: " + err.Error()
					return
				}
				defer res.Body.Close()
				var m map[string]any
				_ = json.NewDecoder(res.Body).Decode(&m)
				ids <- fmt.Sprint(res.StatusCode, " ", m["id"])
			}()
		}
		wg.Wait()
		close(ids)
		seen := map[string]int{}
		for s := range ids {
			seen[s]++
		}
		require.Len(t, seen, 1, "every racer got the same answer: %v", seen)
		for s := range seen {
			assert.True(t, strings.HasPrefix(s, "201 sub-"), s)
		}
		assert.Equal(t, 2, count())

		// The key is a promise that the requests are the same.
		other := subscriptionJSON(store.EventTopicComments, rcv.srv.URL+"/hook", store.PayloadIDOnly, nil, nil)
		res := post(t, r.base+"/Subscription", other, key("create-1"))
		assert.Equal(t, http.StatusUnprocessableEntity, res.status, "%s", res.body)
		secret := []byte(strings.Replace(string(body), "receiver-secret", "another-secret", 1))
		res = post(t, r.base+"/Subscription", secret, key("create-1"))
		assert.Equal(t, http.StatusUnprocessableEntity, res.status, "another header value is another request")
		assert.NotContains(t, string(res.body), "secret")
		res = post(t, r.base+"/Subscription", body, key(strings.Repeat("k", 129)))
		assert.Equal(t, http.StatusBadRequest, res.status, "%s", res.body)
		assert.Equal(t, 2, count())

		// Without a key, two creates are two subscriptions (as before).
		assert.NotEqual(t, r.subscribe(t, body), r.subscribe(t, body))
		assert.Equal(t, 4, count())

		// If-None-Exist: a Subscription search; none creates, one is
		// the answer (200), several are a 412.
		cond := func(c string) http.Header { return http.Header{"If-None-Exist": {c}} }
		lone := subscriptionJSON(store.EventTopicComments, rcv.srv.URL+"/lone", store.PayloadIDOnly, nil, nil)
		made := post(t, r.base+"/Subscription", lone, cond("url="+rcv.srv.URL+"/lone"))
		require.Equal(t, http.StatusCreated, made.status, "%s", made.body)
		found := post(t, r.base+"/Subscription", lone, cond("url="+rcv.srv.URL+"/lone"))
		require.Equal(t, http.StatusOK, found.status, "%s", found.body)
		assert.Equal(t, made.json(t)["id"], found.json(t)["id"])
		res = post(t, r.base+"/Subscription", body, cond("url="+rcv.srv.URL+"/hook"))
		assert.Equal(t, http.StatusPreconditionFailed, res.status, "%s", res.body)
		res = post(t, r.base+"/Subscription", body, cond("criteria=x"))
		assert.Equal(t, http.StatusBadRequest, res.status, "%s", res.body)
		assert.Equal(t, 5, count())

		// A key outlives nothing: once its subscription is deleted, the
		// same key creates it anew (a fresh numbering).
		require.Equal(t, http.StatusNoContent, do(t, http.MethodDelete, r.base+"/Subscription/"+id, nil, nil).status)
		res = post(t, r.base+"/Subscription", body, key("create-1"))
		require.Equal(t, http.StatusCreated, res.status, "%s", res.body)
		assert.Equal(t, id, res.json(t)["id"])
	})
}

// TestSubscriptionMetrics: the senders' posts by type and outcome, the
// delivery latency, and the figures read from the store at each scrape
// (subscriptions by status, the outbox's depth and oldest pending age),
// scraped over HTTP, with no id or URL in any label. On both stores; the
// sender runs by hand.
func TestSubscriptionMetrics(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, withDB func(testing.TB) envOption) {
		m := observe.NewMetrics("test")
		u := metricsListener(t, m)
		r := newSubsRig(t, withDB, false, withTelemetry(m, nil))
		r.sender.Observer = observe.Subscriptions(m)
		r.sender.MinBackoff, r.sender.MaxBackoff = time.Nanosecond, time.Nanosecond
		ctx := context.Background()
		send := func() {
			t.Helper()
			sent, err := r.sender.SendOnce(ctx)
			require.NoError(t, err)
			require.True(t, sent)
		}
		posts := func(f observetest.Families, typ, outcome string) float64 {
			return f.Value("bridge_subscription_notifications_total", labels{"type": typ, "outcome": outcome})
		}

		rcv := newReceiver(t)
		r.subscribe(t, subscriptionJSON(store.EventTopicWorklist, rcv.srv.URL, store.PayloadIDOnly, nil, nil))
		f := observetest.Scrape(t, u)
		assert.Equal(t, 1.0, f.Value("bridge_subscriptions", labels{"status": "requested"}))
		assert.Equal(t, 0.0, f.Value("bridge_subscriptions", labels{"status": "active"}))
		assert.Equal(t, 0.0, f.Value("bridge_subscription_outbox_depth", nil))
		send() // the handshake

		rcv.status.Store(http.StatusServiceUnavailable)
		all, _ := worklistEvents(t, r, 3)
		_, err := r.disp.DispatchAll(ctx)
		require.NoError(t, err)
		send()
		f = observetest.Scrape(t, u)
		assert.Equal(t, 1.0, posts(f, subs.TypeHandshake, subs.OutcomeSent))
		assert.Equal(t, 1.0, posts(f, subs.TypeEvent, subs.OutcomeRejected))
		assert.Equal(t, 0.0, posts(f, subs.TypeEvent, subs.OutcomeSent))
		assert.Equal(t, 1.0, f.Value("bridge_subscriptions", labels{"status": "active"}))
		assert.Equal(t, float64(len(all)), f.Value("bridge_subscription_outbox_depth", nil))
		assert.Greater(t, f.Value("bridge_subscription_oldest_pending_age_seconds", nil), 0.0)
		assert.Equal(t, 0.0, f.Value("bridge_subscription_delivery_latency_seconds", nil), "nothing delivered yet")

		rcv.status.Store(0)
		for range len(all) { // max count 1: one event per post
			send()
		}
		f = observetest.Scrape(t, u)
		assert.Equal(t, float64(len(all)), posts(f, subs.TypeEvent, subs.OutcomeSent))
		assert.Equal(t, float64(len(all)), f.Value("bridge_subscription_delivery_latency_seconds", nil), "one observation per event")
		assert.Equal(t, 0.0, f.Value("bridge_subscription_outbox_depth", nil))
		assert.Equal(t, 0.0, f.Value("bridge_subscription_oldest_pending_age_seconds", nil))

		// An endpoint that is gone.
		rcv.srv.Close()
		worklistEvents(t, r, 1)
		_, err = r.disp.DispatchAll(ctx)
		require.NoError(t, err)
		send()
		f = observetest.Scrape(t, u)
		assert.Equal(t, 1.0, posts(f, subs.TypeEvent, subs.OutcomeUnreachable))
		assertLabelsClean(t, f, r.env)
		assert.NotContains(t, fmt.Sprint(f), rcv.srv.URL, "no endpoint in any series")
	})
}

// onBothStores runs fn in parallel subtests on SQLite and PostgreSQL.
func onBothStores(t *testing.T, fn func(t *testing.T, withDB func(testing.TB) envOption)) {
	for name, withDB := range map[string]func(testing.TB) envOption{"sqlite": withStore, "postgres": withPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, withDB)
		})
	}
}
