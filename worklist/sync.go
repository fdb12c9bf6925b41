// Package worklist keeps the worklist index (docs/worklist-index.md): per
// QUBS domain, a copy in the store of the appointments pending reporting,
// so that searches filter, sort and page without walking QUBS. A Syncer
// walks the QUBS list every interval under a lease in the store (one
// replica per domain at a time), records what arrived, changed and left
// (with events, in the same transactions), and is told by the server of
// what single reads and writes learn in between.
package worklist

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// QUBS is what the Syncer reads of QUBS; *qubs.Client implements it.
type QUBS interface {
	ListPending(ctx context.Context, domain string, pageSize int, nextToken string) (*qubs.AppointmentPage, error)
	GetPending(ctx context.Context, domain, appointmentID string) (*qubs.Appointment, error)
}

// PageSize is the QUBS page a walk reads: QUBS's largest, so a walk of
// 10,000 studies costs at least 20 calls.
const PageSize = 500

// DefaultInterval is BRIDGE_WORKLIST_SYNC_INTERVAL's default.
const DefaultInterval = 30 * time.Second

// ErrNotSynced is returned by Ready when a domain's first complete walk
// has not happened within the caller's deadline.
var ErrNotSynced = errors.New("the worklist index of this domain is not built yet")

// Syncer keeps the index of the domains it is told about.
type Syncer struct {
	Store store.Worklist
	QUBS  QUBS
	Zones *mapping.Zones
	// Owner names this replica in the lease (host and pid).
	Owner string
	// Intervals are the walk intervals; see ParseIntervals.
	Intervals Intervals
	Logger    *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// PageSize is the QUBS page of a walk; 0 means PageSize (tests use
	// small pages to walk several with few studies).
	PageSize int
	// Walking, when set, is called as a walk of domain starts (true) and
	// ends (false): for tests that check walks never overlap.
	Walking func(domain string, started bool)

	mu      sync.Mutex
	domains map[string]chan struct{} // domain -> its loop's wake-up
	// written is, per row this replica last wrote (domain and
	// ServiceRequest id), the digest of the appointment it wrote, so
	// that a read finding a study as it was writes nothing and maps
	// nothing: the row is a function of the appointment (and the zones,
	// fixed for the process). A write transaction per read would
	// serialise reads on SQLite's one writer. Another replica's writes
	// are not seen here; at worst a row they changed stays as they left
	// it until the next walk, which compares every digest in the store.
	written map[string][sha256.Size]byte
	// synced is, per domain, its sync state once a walk has finished, as
	// last read from the store, and when it was read: Ready answers
	// from it for readyFresh rather than read the store per search.
	synced map[string]syncedState
	run    context.Context // set by Run; nil before
	wg     sync.WaitGroup
}

func (s *Syncer) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// lease is how long a walk's lease lasts: two intervals and a margin, so
// that the replica that holds it keeps it from walk to walk (each walk
// renews it, each batch too), and one that died is replaced within it.
func (s *Syncer) lease(domain string) time.Duration {
	return 2*s.Intervals.For(domain) + 30*time.Second
}

// ErrBusy is returned by SyncOnce when another replica holds the lease.
var ErrBusy = errors.New("another replica syncs this domain")

// Result is what one walk did.
type Result struct {
	Seen, Arrived, Changed, Left int
	// Calls is the QUBS pages read.
	Calls int
}

// SyncOnce walks domain's QUBS worklist once under the lease and applies
// it, batch by batch; only a complete walk marks rows that were not seen
// as left, so a walk that fails midway leaves nothing wrongly gone.
func (s *Syncer) SyncOnce(ctx context.Context, domain string) (res Result, err error) {
	defer func() {
		if err != nil && !errors.Is(err, ErrBusy) {
			err = fmt.Errorf("worklist sync of %q: %w", domain, err)
		}
	}()
	lease := s.lease(domain)
	started := s.now()
	ok, err := s.Store.TakeWorklistLease(ctx, domain, s.Owner, lease, started)
	if err != nil {
		return res, err
	}
	if !ok {
		return res, ErrBusy
	}
	if s.Walking != nil {
		s.Walking(domain, true)
		defer s.Walking(domain, false)
	}
	token := ""
	for {
		at := s.now()
		page, err := s.QUBS.ListPending(ctx, domain, cmp.Or(s.PageSize, PageSize), token)
		res.Calls++
		if err != nil {
			return res, err
		}
		rows := make([]store.WorklistRow, 0, len(page.Items))
		sums := make([][sha256.Size]byte, 0, len(page.Items))
		for i := range page.Items {
			r, err := Row(domain, &page.Items[i], s.Zones, at)
			if errors.Is(err, mapping.ErrUnrepresentable) {
				continue // not served either: its id cannot be a FHIR id
			}
			if err != nil {
				return res, err
			}
			rows = append(rows, r)
			sums = append(sums, digest(&page.Items[i]))
		}
		if len(rows) > 0 {
			changes, err := s.Store.ApplyWorklist(ctx, domain, s.Owner, lease, rows, at)
			if err != nil {
				return res, err
			}
			s.remember(domain, rows, sums)
			for _, c := range changes {
				res.Seen++
				switch c.Kind {
				case store.EventArrived:
					res.Arrived++
				case store.EventChanged:
					res.Changed++
				}
			}
		}
		if !page.More() {
			break
		}
		token = *page.NextToken
	}
	left, err := s.Store.FinishWorklistSync(ctx, domain, s.Owner, started, s.now())
	s.keepSynced(domain, nil)
	res.Left = len(left)
	for _, id := range left {
		s.forget(domain, id)
	}
	return res, err
}

// maxWritten bounds the memory of written digests (about 100 bytes an
// entry); past it the memory starts again empty, which costs a write per
// first read of each study, nothing more.
const maxWritten = 200_000

// remember records the digests (digest) of the appointments of rows just
// written, sums[i] rows[i]'s.
func (s *Syncer) remember(domain string, rows []store.WorklistRow, sums [][sha256.Size]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written == nil || len(s.written)+len(rows) > maxWritten {
		s.written = make(map[string][sha256.Size]byte, len(rows))
	}
	for i, r := range rows {
		s.written[domain+"\x00"+r.ID] = sums[i]
	}
}

// forget drops a row that left: a read finding it back must write it.
func (s *Syncer) forget(domain, id string) {
	s.mu.Lock()
	delete(s.written, domain+"\x00"+id)
	s.mu.Unlock()
}

// unchanged reports whether this replica last wrote domain's row id from
// an appointment whose digest is sum.
func (s *Syncer) unchanged(domain, id string, sum [sha256.Size]byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.written[domain+"\x00"+id]
	return ok && d == sum
}

// Saw records what a read of one appointment found (a refresh of its
// row, an arrival if the index did not have it). Unchanged since this
// replica wrote it, it costs a hash (digest), not a mapping.
func (s *Syncer) Saw(ctx context.Context, domain string, a *qubs.Appointment) error {
	sum := digest(a)
	if id, err := mapping.ServiceRequestID(a.AppointmentID); err == nil && s.unchanged(domain, id, sum) {
		return nil
	}
	now := s.now()
	r, err := Row(domain, a, s.Zones, now)
	if err != nil {
		return err
	}
	if _, err = s.Store.ApplyWorklist(ctx, domain, "", 0, []store.WorklistRow{r}, now); err != nil {
		return err
	}
	s.remember(domain, []store.WorklistRow{r}, [][sha256.Size]byte{sum})
	return nil
}

// Gone records that QUBS no longer has appointmentID pending: its row
// leaves the index at once.
func (s *Syncer) Gone(ctx context.Context, domain, appointmentID string) error {
	if id, err := mapping.ServiceRequestID(appointmentID); err == nil {
		s.forget(domain, id)
	}
	_, err := s.Store.LeaveWorklist(ctx, domain, appointmentID, s.now())
	return err
}

// Refresh re-reads one appointment from QUBS after a write changed its
// study (a report delivered, a comment created) and records the answer.
func (s *Syncer) Refresh(ctx context.Context, domain, appointmentID string) error {
	a, err := s.QUBS.GetPending(ctx, domain, appointmentID)
	if qubs.KindOf(err) == qubs.KindNotFound {
		return s.Gone(ctx, domain, appointmentID)
	}
	if err != nil {
		return err
	}
	return s.Saw(ctx, domain, a)
}

// Ready returns the domain's sync state once a complete walk has
// happened, starting the domain's loop (and a walk) when it is new; it
// waits for the first walk until ctx ends, then answers ErrNotSynced.
func (s *Syncer) Ready(ctx context.Context, domain string) (*store.WorklistSync, error) {
	s.mu.Lock()
	c, ok := s.synced[domain]
	s.mu.Unlock()
	if ok && time.Since(c.read) < readyFresh {
		return c.st, nil
	}
	st, err := s.Store.WorklistSyncState(ctx, domain)
	if err != nil || st.Finished != nil {
		if err == nil {
			s.keepSynced(domain, st)
		}
		return st, err
	}
	s.Add(domain)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ErrNotSynced
		case <-tick.C:
		}
		if st, err = s.Store.WorklistSyncState(ctx, domain); err != nil || st.Finished != nil {
			return st, err
		}
	}
}

// readyFresh is how long Ready trusts the sync state it read. A search
// answered from it may give a walk another replica finished meanwhile as
// not yet finished: its freshness signals say older than the truth,
// never newer. A walk of this replica's forgets it at once.
const readyFresh = time.Second

type syncedState struct {
	st   *store.WorklistSync
	read time.Time
}

// keepSynced keeps st (finished) as domain's sync state; nil forgets it.
func (s *Syncer) keepSynced(domain string, st *store.WorklistSync) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st == nil {
		delete(s.synced, domain)
		return
	}
	if s.synced == nil {
		s.synced = map[string]syncedState{}
	}
	s.synced[domain] = syncedState{st: st, read: time.Now()}
}

// Add starts keeping domain (a no-op when it is kept already, or before
// Run: Run starts the domains added before it).
func (s *Syncer) Add(domain string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.domains == nil {
		s.domains = map[string]chan struct{}{}
	}
	if _, ok := s.domains[domain]; ok {
		return
	}
	wake := make(chan struct{}, 1)
	s.domains[domain] = wake
	if s.run != nil {
		s.start(domain, wake)
	}
}

// Domains are the domains kept, in no order.
func (s *Syncer) Domains() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.domains))
	for d := range s.domains {
		out = append(out, d)
	}
	return out
}

// SyncNow wakes domain's loop for a walk at once (tests, and a domain
// just added).
func (s *Syncer) SyncNow(domain string) {
	s.mu.Lock()
	wake := s.domains[domain]
	s.mu.Unlock()
	if wake != nil {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}

// Run keeps the added domains until ctx ends, then gives their leases
// up so another replica takes over at once.
func (s *Syncer) Run(ctx context.Context) {
	s.mu.Lock()
	s.run = ctx
	for d, wake := range s.domains {
		s.start(d, wake)
	}
	s.mu.Unlock()
	<-ctx.Done()
	s.wg.Wait()
}

// start runs domain's loop; s.mu is held.
func (s *Syncer) start(domain string, wake chan struct{}) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.loop(s.run, domain, wake)
	}()
}

// loop walks domain at once and then every interval; while another
// replica holds the lease, its walks are refused (ErrBusy) and cost
// nothing but the attempt.
func (s *Syncer) loop(ctx context.Context, domain string, wake chan struct{}) {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	every := s.Intervals.For(domain)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := s.Store.ReleaseWorklistLease(rctx, domain, s.Owner); err != nil {
				log.Warn("worklist lease not released", "domain", domain, "error", err.Error())
			}
			cancel()
			return
		case <-timer.C:
		case <-wake:
		}
		begin := time.Now()
		res, err := s.SyncOnce(ctx, domain)
		switch {
		case errors.Is(err, ErrBusy):
		case err != nil && ctx.Err() == nil:
			// The error names operations and kinds, never an appointment's
			// content (store and qubs errors carry no PHI).
			log.Warn("worklist sync failed", "domain", domain, "error", err.Error(), "qubs_calls", res.Calls)
		case err == nil:
			log.Debug("worklist synced", "domain", domain, "seen", res.Seen, "arrived", res.Arrived,
				"changed", res.Changed, "left", res.Left, "qubs_calls", res.Calls, "duration", time.Since(begin).String())
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(every)
	}
}
