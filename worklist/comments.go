package worklist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// CommentQUBS is what the comment watch reads of QUBS; *qubs.Client
// implements it.
type CommentQUBS interface {
	ListComments(ctx context.Context, domain, appointmentID string) ([]qubs.Comment, error)
}

// CommentStore is what the comment watch keeps in the store.
type CommentStore interface {
	store.CommentWatch
	WorklistSyncState(ctx context.Context, domain string) (*store.WorklistSync, error)
	SearchSubscriptions(ctx context.Context, domain string, statuses []string) ([]*store.Subscription, error)
}

// DefaultCommentRate is BRIDGE_COMMENT_POLL_RATE's default: QUBS calls per
// second per domain.
const DefaultCommentRate = 5.0

// CommentWatch tells the comments topic of comments and alerts added in
// QUBS by anyone (docs/subscriptions.md, "Comments"). QUBS has no feed of
// them, only a list per pending appointment, so per domain, while a
// comments subscription exists there, one replica (a lease in the store)
// polls the comments of the studies on the worklist index, round-robin,
// at Rate calls per second, and the store appends an event for each
// comment that is news in the transaction that records it as seen.
type CommentWatch struct {
	Store CommentStore
	QUBS  CommentQUBS
	// Syncer names the domains (those the index keeps) and is told of a
	// study QUBS no longer has.
	Syncer *Syncer
	// Owner names this replica in the lease.
	Owner string
	// Rate is the QUBS calls per second per domain (DefaultCommentRate
	// when 0).
	Rate   float64
	Logger *slog.Logger
	// Idle is how often a domain without a comments subscription, or
	// whose watch another replica holds, looks again (2 s when 0).
	Idle time.Duration
	// MinRound is the shortest time in which the watch goes round a
	// worklist smaller than a batch (10 s when 0): a handful of studies
	// need not be listed several times a second.
	MinRound time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	mu      sync.Mutex
	running map[string]bool
	wg      sync.WaitGroup
}

// commentLease is how long a watcher's lease lasts without a poll: a
// replica that died is replaced within it, and a watch idle for ten
// times longer begins anew (docs/subscriptions.md).
const commentLease = 30 * time.Second

// maxCommentBackoff bounds the wait after QUBS errors.
const maxCommentBackoff = time.Minute

func (w *CommentWatch) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func (w *CommentWatch) rate() float64 {
	if w.Rate > 0 {
		return w.Rate
	}
	return DefaultCommentRate
}

func (w *CommentWatch) log() *slog.Logger {
	if w.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.Logger
}

// Run watches every domain the Syncer keeps (those added later too)
// until ctx ends, then gives the leases up.
func (w *CommentWatch) Run(ctx context.Context) {
	idle := w.idle()
	tick := time.NewTicker(idle)
	defer tick.Stop()
	for {
		for _, d := range w.Syncer.Domains() {
			w.mu.Lock()
			if w.running == nil {
				w.running = map[string]bool{}
			}
			if !w.running[d] {
				w.running[d] = true
				w.wg.Add(1)
				go func() { defer w.wg.Done(); w.loop(ctx, d) }()
			}
			w.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			w.wg.Wait()
			return
		case <-tick.C:
		}
	}
}

func (w *CommentWatch) minRound() time.Duration {
	if w.MinRound > 0 {
		return w.MinRound
	}
	return 10 * time.Second
}

func (w *CommentWatch) idle() time.Duration {
	if w.Idle > 0 {
		return w.Idle
	}
	return 2 * time.Second
}

// loop watches one domain: a batch of studies at a time, each batch
// asked of the store afresh so that arrivals and changes go first.
func (w *CommentWatch) loop(ctx context.Context, domain string) {
	every := time.Duration(float64(time.Second) / w.rate())
	backoff := time.Duration(0)
	held := false
	release := func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := w.Store.ReleaseCommentLease(rctx, domain, w.Owner); err != nil {
			w.log().Warn("comment lease not released", "domain", domain, "error", err.Error())
		}
	}
	defer func() {
		if held {
			release()
		}
	}()
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		begin := time.Now()
		res, err := w.PollOnce(ctx, domain, every)
		if held && !res.Held && err == nil {
			// The last comments subscription went: another replica may
			// take the watch up at once when one comes back.
			release()
		}
		held = res.Held
		switch {
		case err != nil && ctx.Err() == nil:
			// Errors name operations and kinds, never a comment's content
			// (store and qubs errors carry no PHI).
			w.log().Warn("comment watch failed", "domain", domain, "error", err.Error(), "qubs_calls", res.Calls)
			backoff = min(max(2*backoff, time.Second), maxCommentBackoff)
			wait = backoff
		case res.Calls == 0:
			backoff, wait = 0, w.idle()
		default:
			// The batch waited between its calls; this is the wait after
			// its last, so that a worklist smaller than a batch is not
			// polled faster than the rate.
			backoff, wait = 0, every
			if res.Calls < w.commentBatch() {
				// The batch went round the whole worklist.
				wait = max(every, w.minRound()-time.Since(begin))
			}
			if res.Events > 0 {
				w.log().Debug("comments told", "domain", domain, "events", res.Events, "qubs_calls", res.Calls)
			}
		}
	}
}

// CommentResult is what one PollOnce did.
type CommentResult struct {
	// Held is whether this replica holds the domain's watch.
	Held bool
	// Calls is the QUBS calls made, Events the events appended.
	Calls, Events int
}

// commentBatch is how many studies a batch polls: a few seconds' worth,
// so that what arrives meanwhile waits no longer than that.
func (w *CommentWatch) commentBatch() int {
	return max(1, int(w.rate()*5))
}

// PollOnce polls one batch of domain's studies, each call at least every
// apart (0: at once, as tests do), when a comments subscription exists
// there and this replica holds (or takes) the domain's watch.
func (w *CommentWatch) PollOnce(ctx context.Context, domain string, every time.Duration) (res CommentResult, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("comment watch of %q: %w", domain, err)
		}
	}()
	subs, err := w.Store.SearchSubscriptions(ctx, domain, []string{store.SubscriptionRequested, store.SubscriptionActive, store.SubscriptionError})
	if err != nil {
		return res, err
	}
	only, watched := commentStudiesWanted(subs)
	if !watched {
		// No comments subscription: no QUBS cost. A lease still held
		// runs out; the watch begins anew when one comes back.
		return res, nil
	}
	if st, err := w.Store.WorklistSyncState(ctx, domain); err != nil || st.Finished == nil {
		// Before the index's first walk every study would look new.
		return res, err
	}
	began, ok, err := w.Store.TakeCommentLease(ctx, domain, w.Owner, commentLease, w.now())
	if err != nil || !ok {
		return res, err
	}
	res.Held = true
	studies, err := w.Store.CommentStudies(ctx, domain, began, only, w.commentBatch())
	if err != nil {
		return res, err
	}
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for i, s := range studies {
		if i > 0 && tick != nil {
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-tick:
			}
		}
		n, err := w.poll(ctx, domain, s)
		res.Calls++
		res.Events += n
		if errors.Is(err, store.ErrConflict) {
			// Another replica took the watch over (this one overran its
			// lease): it polls from here.
			res.Held = false
			return res, nil
		}
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// poll reads one study's comments and records them.
func (w *CommentWatch) poll(ctx context.Context, domain string, s store.CommentStudy) (int, error) {
	cs, err := w.QUBS.ListComments(ctx, domain, s.AppointmentID)
	if qubs.KindOf(err) == qubs.KindNotFound {
		// The study left: its watch ends, and the index hears it at once.
		if err := w.Store.EndCommentWatch(ctx, domain, s.AppointmentID); err != nil {
			return 0, err
		}
		return 0, w.Syncer.Gone(ctx, domain, s.AppointmentID)
	}
	if err != nil {
		return 0, err
	}
	patient := strings.TrimPrefix(s.Patient, "Patient/")
	polled := make([]store.PolledComment, 0, len(cs))
	for _, c := range cs {
		if c.GUID == "" {
			continue // nothing to know it again by
		}
		ev, err := CommentEvent(domain, s.AppointmentID, patient, c)
		if errors.Is(err, mapping.ErrUnrepresentable) {
			continue // not served either: its id cannot be a FHIR id
		}
		if err != nil {
			return 0, err
		}
		polled = append(polled, store.PolledComment{GUID: c.GUID, Modified: CommentModified(c), Event: ev})
	}
	return w.Store.RecordComments(ctx, domain, w.Owner, commentLease, s.AppointmentID, polled, w.now())
}

// CommentEvent is the comments-topic event of comment c listed through
// appointmentID (patientID the FHIR id of its patient): focus the
// Communication, as the bridge serves it.
func CommentEvent(domain, appointmentID, patientID string, c qubs.Comment) (*store.Event, error) {
	m, err := mapping.CommunicationFromComment(appointmentID, patientID, c)
	if err != nil {
		return nil, fmt.Errorf("mapping comment: %w", err)
	}
	b, err := m.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encoding Communication: %w", err)
	}
	return &store.Event{Domain: domain, Topic: store.EventTopicComments, Kind: store.EventCreated,
		FocusType: "Communication", FocusID: *m.Id, AppointmentID: appointmentID, Resource: b}, nil
}

// CommentModified is when QUBS last changed c, as far as it says.
func CommentModified(c qubs.Comment) time.Time {
	switch {
	case c.LastModifiedDateTime != nil:
		return *c.LastModifiedDateTime
	case c.CommentDateTime != nil:
		return *c.CommentDateTime
	}
	return time.Time{}
}

// commentStudiesWanted reads the comments subscriptions: whether there is
// any, and, when every one of them names its studies (based-on), the
// ServiceRequest ids they name: only those can match, so only those are
// polled. only is nil when any study may match.
func commentStudiesWanted(subs []*store.Subscription) (only []string, watched bool) {
	var ids []string
	all := false
	for _, s := range subs {
		if s.Topic != store.EventTopicComments {
			continue
		}
		watched = true
		named := basedOn(s.Criteria)
		if named == nil {
			all = true
			continue
		}
		ids = append(ids, named...)
	}
	if all || !watched {
		return nil, watched
	}
	return ids, true
}

// basedOn is the ServiceRequest ids a subscription's criteria restrict it
// to, nil when they do not (criteria were validated at create: a
// based-on value is "ServiceRequest/[id]" or "[id]"). Repeated criteria
// AND: any one of them bounds the set, the first is taken.
func basedOn(criteria []string) []string {
	for _, c := range criteria {
		_, query, _ := strings.Cut(c, "?")
		v, err := url.ParseQuery(query)
		if err != nil || len(v["based-on"]) == 0 {
			continue
		}
		ids := []string{}
		for _, val := range v["based-on"][:1] {
			for _, ref := range strings.Split(val, ",") {
				ids = append(ids, strings.TrimPrefix(ref, "ServiceRequest/"))
			}
		}
		return ids
	}
	return nil
}
