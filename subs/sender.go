// Package subs implements FHIR Subscriptions (R4 Subscriptions Backport
// IG, topic-based, rest-hook) over the store's event log: a Dispatcher
// numbers each event for the subscriptions it matches (the outbox), and a
// Sender posts the numbered notifications to each subscription's
// endpoint, in order, through the SSRF Policy. docs/subscriptions.md.
//
// Guarantees: eventNumbers are exact (numbered once, in the transaction
// that advances the dispatcher's watermark, never skipped nor repeated);
// delivery is at least once at the HTTP level: a receiver sees one
// eventNumber twice only when the process died after its POST succeeded
// and before the success was recorded, and then with the same number, so
// it can drop the repeat.
package subs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// Defaults of Sender and Dispatcher.
const (
	DefaultPollInterval = time.Second
	DefaultTimeout      = 10 * time.Second
	MaxTimeout          = time.Minute
	DefaultMinBackoff   = 5 * time.Second
	DefaultMaxBackoff   = 5 * time.Minute
	// DefaultErrorAfter: a subscription whose endpoint failed for this
	// long goes to status error (it is still tried, at the longest
	// backoff, and comes back to active on the first success).
	DefaultErrorAfter = 10 * time.Minute
	// DefaultInFlight bounds the notifications being posted at once, all
	// subscriptions together; each subscription has at most one.
	DefaultInFlight = 16
	DefaultBatch    = 500
)

// Outcomes of one notification post, for Observer: the kinds of the
// failure reasons, with no detail that could name the endpoint.
const (
	OutcomeSent        = "sent"
	OutcomeRejected    = "rejected"    // a non-2xx answer (a redirect too: never followed)
	OutcomeTimeout     = "timeout"     // no answer within the subscription's timeout
	OutcomeUnreachable = "unreachable" // no connection, or it broke
	OutcomeRefused     = "refused"     // the endpoint policy refused the address
	OutcomeError       = "error"       // the bridge could not build the notification
)

// Outcomes and PostTypes are every outcome and notification type a post
// has, for metrics resolved up front.
var (
	Outcomes  = []string{OutcomeSent, OutcomeRejected, OutcomeTimeout, OutcomeUnreachable, OutcomeRefused, OutcomeError}
	PostTypes = []string{TypeHandshake, TypeHeartbeat, TypeEvent}
)

// Observer watches the sender (the observe package implements it).
type Observer interface {
	// Posted is told the end of one post of type typ at now; on success
	// delivered holds the times of the events it carried.
	Posted(typ, outcome string, delivered []time.Time, now time.Time)
}

// Sender posts due notifications. Several senders (goroutines or
// replicas) may share a store: a subscription is leased to one at a time.
type Sender struct {
	Store  store.Store
	Client *http.Client
	Logger *slog.Logger
	// Name identifies the sender in leases; unique per sender.
	Name string
	// Base is the FHIR base of a domain, for the references in
	// notifications; nil means relative references.
	Base func(domain string) string
	// Resolve gives full-resource payloads of events that kept no
	// resource.
	Resolve      Resolver
	PollInterval time.Duration
	MinBackoff   time.Duration
	MaxBackoff   time.Duration
	ErrorAfter   time.Duration
	InFlight     int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Observer is told how each post ended (metrics); nil for none.
	Observer Observer

	kick chan struct{}
	once sync.Once
}

func (s *Sender) defaults() {
	s.once.Do(func() {
		if s.Logger == nil {
			s.Logger = slog.New(slog.DiscardHandler)
		}
		if s.Name == "" {
			s.Name = "sender-" + strconv.FormatUint(rand.Uint64(), 36)
		}
		if s.PollInterval <= 0 {
			s.PollInterval = DefaultPollInterval
		}
		if s.MinBackoff <= 0 {
			s.MinBackoff = DefaultMinBackoff
		}
		if s.MaxBackoff <= 0 {
			s.MaxBackoff = DefaultMaxBackoff
		}
		if s.ErrorAfter <= 0 {
			s.ErrorAfter = DefaultErrorAfter
		}
		if s.InFlight <= 0 {
			s.InFlight = DefaultInFlight
		}
		if s.Now == nil {
			s.Now = time.Now
		}
		if s.Client == nil {
			s.Client = (&Policy{}).Client()
		}
		s.kick = make(chan struct{}, 1)
	})
}

// Kick wakes the sender (a subscription was created, notifications were
// dispatched). It never blocks.
func (s *Sender) Kick() {
	s.defaults()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run sends until ctx is done, then waits for the posts under way. It
// runs InFlight workers, each claiming a subscription, posting to it and
// settling before it claims again: a slow receiver holds one worker for at
// most its timeout and never the others, and claims (a write transaction
// each) run side by side rather than queue behind one loop.
func (s *Sender) Run(ctx context.Context) {
	s.defaults()
	var wg sync.WaitGroup
	for i := range s.InFlight {
		wg.Add(1)
		go func() { defer wg.Done(); s.work(ctx, i == 0) }()
	}
	wg.Wait()
}

// work is one sender worker. Only the first polls; the others sleep until
// kicked (by a create, a dispatch, or a worker that found work), so an
// idle bridge makes one claim per PollInterval, not one per worker: each
// claim is a write transaction, which on SQLite takes the one write lock.
func (s *Sender) work(ctx context.Context, poll bool) {
	var tick <-chan time.Time
	if poll {
		t := time.NewTicker(s.PollInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		for ctx.Err() == nil {
			sub, notes, err := s.Store.ClaimNotifications(ctx, s.Name, s.lease(), s.Now())
			if err != nil {
				if !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
					s.Logger.Error("claiming notifications", "err", err)
				}
				break
			}
			// More may be due: wake an idle worker to look, so the
			// workers ramp up one kick after another.
			s.Kick()
			s.attempt(ctx, sub, notes)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-s.kick:
		}
	}
}

// lease is the margin of a claim beyond the subscription's own timeout:
// building the notification and recording the outcome fit in it.
func (s *Sender) lease() time.Duration { return 10 * time.Second }

// SendOnce claims and posts one due subscription's notification, for tests
// and tools; false when none was due.
func (s *Sender) SendOnce(ctx context.Context) (bool, error) {
	s.defaults()
	sub, notes, err := s.Store.ClaimNotifications(ctx, s.Name, s.lease(), s.Now())
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s.attempt(ctx, sub, notes)
	return true, nil
}

// attempt posts one notification and records the outcome.
func (s *Sender) attempt(ctx context.Context, sub *store.Subscription, notes []store.Notification) {
	typ := TypeEvent
	switch {
	case sub.Status == store.SubscriptionRequested:
		typ = TypeHandshake
	case len(notes) == 0:
		typ = TypeHeartbeat
	}
	var through int64
	if len(notes) > 0 {
		through = notes[len(notes)-1].EventNumber
	}
	outcome, failure := s.post(ctx, sub, typ, notes)
	now := s.Now()
	if s.Observer != nil {
		var delivered []time.Time
		if outcome == OutcomeSent {
			delivered = make([]time.Time, len(notes))
			for i := range notes {
				delivered[i] = notes[i].Event.At
			}
		}
		s.Observer.Posted(typ, outcome, delivered, now)
	}
	retry := now.Add(s.backoff(sub.Attempts))
	// Settle even when ctx ended: the post's outcome is known, and
	// recording it saves a repeat.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.Store.SettleNotifications(sctx, s.Name, sub.Domain, sub.ID, through, failure, now, retry, s.ErrorAfter); err != nil {
		// A lost lease or a deleted subscription: the next claim sorts
		// it out (a repeat with the same eventNumbers at worst).
		s.Logger.Warn("recording a notification attempt", "subscription", sub.ID, "err", err)
		return
	}
	if failure != "" {
		s.Logger.Info("notification failed", "subscription", sub.ID, "type", typ, "attempts", sub.Attempts+1, "reason", failure)
	}
}

// backoff after the attempts-th consecutive failure: doubling from
// MinBackoff, capped, with jitter so receivers that come back are not hit
// by every subscription at once.
func (s *Sender) backoff(attempts int) time.Duration {
	d := s.MinBackoff
	for range min(attempts, 20) {
		d *= 2
		if d >= s.MaxBackoff {
			d = s.MaxBackoff
			break
		}
	}
	return d/2 + rand.N(d/2+1)
}

// post sends one notification Bundle; it answers the outcome and the
// failure ("" on success) as a PHI-free reason for the subscription's
// error.
func (s *Sender) post(ctx context.Context, sub *store.Subscription, typ string, notes []store.Notification) (outcome, failure string) {
	base := ""
	if s.Base != nil {
		base = s.Base(sub.Domain)
	}
	b, err := NotificationBundle(ctx, base, sub, typ, notes, s.Now(), s.Resolve)
	if err != nil {
		s.Logger.Error("building a notification", "subscription", sub.ID, "err", err)
		return OutcomeError, "the bridge could not build the notification"
	}
	body, err := json.Marshal(b)
	if err != nil {
		return OutcomeError, "the bridge could not build the notification"
	}
	timeout := sub.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, min(timeout, MaxTimeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sub.Endpoint, bytes.NewReader(body))
	if err != nil {
		return OutcomeError, "the endpoint is not a valid URL"
	}
	for _, h := range sub.Headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	resp, err := s.Client.Do(req)
	if err != nil {
		switch {
		case errors.Is(err, ErrRefused):
			return OutcomeRefused, "the endpoint's address is refused by the bridge's policy"
		case errors.Is(err, context.DeadlineExceeded):
			return OutcomeTimeout, "the endpoint did not answer within " + min(timeout, MaxTimeout).String()
		}
		return OutcomeUnreachable, "the endpoint could not be reached"
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return OutcomeRejected, "the endpoint answered HTTP " + strconv.Itoa(resp.StatusCode)
	}
	return OutcomeSent, ""
}

// Dispatcher numbers new events for the subscriptions they match; one
// runs per replica, and the store lets one dispatch at a time.
type Dispatcher struct {
	Store   store.Store
	Matcher *Matcher
	Logger  *slog.Logger
	// Batch is the most events one transaction passes.
	Batch        int
	PollInterval time.Duration
	// Dispatched, when set, is called after a transaction that wrote
	// notifications (the sender's Kick).
	Dispatched func(events, notifications int)
}

// Run dispatches until ctx is done.
func (d *Dispatcher) Run(ctx context.Context) {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.PollInterval <= 0 {
		d.PollInterval = DefaultPollInterval
	}
	t := time.NewTicker(d.PollInterval)
	defer t.Stop()
	for {
		if _, err := d.DispatchAll(ctx); err != nil && ctx.Err() == nil {
			d.Logger.Error("dispatching events to subscriptions", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// DispatchAll dispatches until the log is caught up and returns how many
// notifications it wrote.
func (d *Dispatcher) DispatchAll(ctx context.Context) (int, error) {
	if d.Matcher == nil {
		d.Matcher = NewMatcher()
	}
	batch := d.Batch
	if batch <= 0 {
		batch = DefaultBatch
	}
	total := 0
	for {
		evs, notes, err := d.Store.DispatchEvents(ctx, batch, d.Matcher.Match)
		if err != nil {
			return total, err
		}
		total += notes
		if notes > 0 && d.Dispatched != nil {
			d.Dispatched(evs, notes)
		}
		if evs < batch {
			return total, nil
		}
	}
}
