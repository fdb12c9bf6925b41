package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auditjournal"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// Defaults of the audit writer.
const (
	// DefaultAuditBuffer is how many audit records may wait to be
	// committed: a few seconds of a busy replica's requests, and the most
	// a crash of the process can lose when reads do not wait for commits.
	DefaultAuditBuffer = 1024
	// auditMaxBatch bounds one transaction, so that a backlog after an
	// outage is written in pieces the database takes comfortably.
	auditMaxBatch = 512
	// auditAttemptTimeout bounds one attempt to write a batch.
	auditAttemptTimeout = 10 * time.Second
	auditMinBackoff     = 50 * time.Millisecond
	auditMaxBackoff     = 5 * time.Second
	// auditLinger is how long a small batch (under auditLingerBatch
	// records) may wait for more while no request waits for a commit: a
	// commit costs several times what writing a read's record does, so
	// on SQLite reads arriving a few at a time paid mostly commits (a
	// read's record: 66-80 µs of CPU in batches of 4, 33-41 µs in
	// batches of 16, BenchmarkRecordAudits/read). At 2,500 reads a
	// second, 10 ms gathers about 25.
	auditLinger      = 50 * time.Millisecond
	auditLingerBatch = 256
	// auditGather is how long a batch that requests wait for may wait
	// for the records of the other requests in flight that have not
	// queued theirs yet. On PostgreSQL a
	// batch costs a round trip, which on the machine of
	// docs/performance.md costs the bridge and the server more CPU than
	// several records do (BenchmarkRecordAudits/postgres/read: 13 µs and
	// 32 µs of PostgreSQL per record in batches of 16, 38 and 72 in
	// batches of 4), and the batches of reads waiting for their commit
	// held 5-7 records at 16 clients. A bound: a batch goes as soon as
	// no request in flight may still queue a record.
	auditGather = time.Millisecond
	// auditJournalLogEvery bounds how often a failing journal is logged:
	// each record would otherwise log its own error.
	auditJournalLogEvery = 10 * time.Second
)

var (
	// errAuditClosed is returned to requests arriving after Close began;
	// the HTTP server is drained before, so only a bug gets one.
	errAuditClosed = errors.New("audit writer closed")
	// errAuditFull is returned when the buffer stayed full until the
	// request's deadline: the store has been failing for that long.
	errAuditFull = errors.New("audit buffer full")
)

// auditWriter is the audit trail's group commit. Requests enqueue their
// records; one goroutine writes whatever has accumulated as one batch, in
// one transaction (store.Audit.RecordAudits), while the next batch
// accumulates. The buffer is bounded by records not yet committed (queued
// plus the batch being written), so that the records a crash can lose are
// never more than the buffer holds. When it is full, enqueue waits for
// room: back-pressure, never a dropped record. A batch the store refuses
// for a transient reason is retried, with backoff, until it is written or
// the writer is closed.
//
// With a journal (BRIDGE_AUDIT_JOURNAL), each record is also appended to
// a local file before enqueue returns, and the journal is told of every
// commit: a crash of the process then loses no record whose answer was
// sent, without that answer waiting for a commit. The records a previous
// process left in the journal are queued first, when the writer starts.
type auditWriter struct {
	st       store.Audit
	log      *slog.Logger
	capacity int
	metrics  *observe.Metrics      // nil: off
	journal  *auditjournal.Journal // nil: off
	// journalFailures counts appends that failed since the last log of
	// one, at journalLogged.
	journalFailures int
	journalLogged   time.Time
	// gather and lingerFor are auditGather and auditLinger; tests set
	// their own.
	gather, lingerFor time.Duration

	mu    sync.Mutex
	queue []*store.AuditRecord // enqueued, not yet taken by the writer
	// pending counts the records not committed yet: the queue and the
	// batch in flight. Room is freed only by a commit.
	pending int
	// replaying counts the records the journal read back at start that
	// are not committed yet, at the head of the queue. They are not in
	// pending: most may be committed already (the store skips them), and
	// new requests need not wait for them to be written again.
	replaying int
	// enqueued and committed are sequence numbers: the records are
	// numbered 1, 2, ... as enqueued, and committed in that order.
	enqueued, committed uint64
	// changed is closed (and replaced) whenever a batch is committed, to
	// wake whoever waits for room or for a commit.
	changed chan struct{}
	closing bool
	// waiters counts requests waiting for a commit; while there are any,
	// batches do not linger, but gather (see linger).
	waiters int
	// active counts the requests in flight that may still add a record
	// to the batch being gathered (begin, auditPending.leave).
	active int

	wake  chan struct{} // a record was enqueued, or Close began
	hurry chan struct{} // someone waits for a commit, or Close began
	stop  context.CancelFunc
	ctx   context.Context // ends the retries when Close gives up
	done  chan struct{}
}

// newAuditWriter starts the writer; metrics and journal may be nil. The
// records the journal read back are queued before any other, outside the
// buffer's count.
func newAuditWriter(st store.Audit, capacity int, log *slog.Logger, metrics *observe.Metrics, journal *auditjournal.Journal) *auditWriter {
	if capacity <= 0 {
		capacity = DefaultAuditBuffer
	}
	ctx, stop := context.WithCancel(context.Background())
	w := &auditWriter{
		st: st, log: log, capacity: capacity, gather: auditGather, lingerFor: auditLinger,
		metrics: metrics, journal: journal,
		changed: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		hurry:   make(chan struct{}, 1),
		ctx:     ctx, stop: stop,
		done: make(chan struct{}),
	}
	if journal != nil {
		// Numbered 1..n, as the journal numbered them.
		w.queue = journal.Replayed()
		w.replaying = len(w.queue)
		w.enqueued = uint64(len(w.queue))
	}
	go w.run()
	return w
}

// enqueue adds a record to the next batch and returns its sequence number,
// for wait, and whether it is in the journal (false without one, or when
// the append failed: then only a commit keeps it). When the buffer is full
// it waits for room until ctx is done, then returns errAuditFull: the
// caller must not send the answer the record is about.
func (w *auditWriter) enqueue(ctx context.Context, rec *store.AuditRecord) (seq uint64, journaled bool, err error) {
	if w.journal != nil {
		rec.SetIdentity() // fixed before the record is journaled
	}
	for {
		w.mu.Lock()
		if w.closing {
			w.mu.Unlock()
			return 0, false, errAuditClosed
		}
		if w.pending < w.capacity {
			w.enqueued++
			seq := w.enqueued
			if w.journal != nil {
				// Under w.mu: the journal's appends are in sequence order.
				journaled = w.journalAppend(rec, seq)
			}
			w.queue = append(w.queue, rec)
			w.pending++
			w.mu.Unlock()
			select {
			case w.wake <- struct{}{}:
			default: // the writer has been woken already
			}
			return seq, journaled, nil
		}
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, false, fmt.Errorf("%w: %w", errAuditFull, context.Cause(ctx))
		}
	}
}

// journalAppend appends rec to the journal; a failure (a full or broken
// disk) is counted and logged now and then, and the record is kept by its
// commit instead (recordAudit waits for it). Called with w.mu held.
func (w *auditWriter) journalAppend(rec *store.AuditRecord, seq uint64) bool {
	err := w.journal.Append(rec, seq)
	if err == nil {
		return true
	}
	w.metrics.AuditJournalFailed()
	w.journalFailures++
	if now := time.Now(); now.Sub(w.journalLogged) >= auditJournalLogEvery {
		w.log.Error("audit journal: appending failed; requests wait for their record's commit instead",
			"records", w.journalFailures, "error", err.Error())
		w.journalFailures, w.journalLogged = 0, now
	}
	return false
}

// wait returns once the record numbered seq (and every one before it) is
// committed, or when ctx is done. The record stays queued either way.
func (w *auditWriter) wait(ctx context.Context, seq uint64) error {
	w.mu.Lock()
	if w.committed >= seq {
		w.mu.Unlock()
		return nil
	}
	w.waiters++
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.waiters--
		w.mu.Unlock()
	}()
	select {
	case w.hurry <- struct{}{}:
	default: // the writer has been hurried already
	}
	for {
		w.mu.Lock()
		if w.committed >= seq {
			w.mu.Unlock()
			return nil
		}
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the audit commit: %w", context.Cause(ctx))
		}
	}
}

// begin counts a request that may queue a record until it leaves: once
// its record is queued or stored with its write, or it ends without one.
// A batch being gathered goes when none is left (see linger).
func (w *auditWriter) begin(p *auditPending) {
	w.mu.Lock()
	w.active++
	w.mu.Unlock()
	*p = auditPending{w: w}
}

// auditPending is one request counted by begin (a field of its state, so
// that counting allocates nothing).
type auditPending struct {
	w    *auditWriter
	left bool // only the request's own goroutine reads or writes it
}

// leave uncounts the request; calls after the first do nothing.
func (p *auditPending) leave() {
	if p.w == nil || p.left {
		return // not counted, or left already
	}
	p.left = true
	w := p.w
	w.mu.Lock()
	w.active--
	waited := w.waiters > 0
	w.mu.Unlock()
	if waited {
		select {
		case w.hurry <- struct{}{}:
		default:
		}
	}
}

// flush waits until every record enqueued so far is committed.
func (w *auditWriter) flush(ctx context.Context) error {
	w.mu.Lock()
	seq := w.enqueued
	w.mu.Unlock()
	return w.wait(ctx, seq)
}

// backlog is how many records are not committed yet.
func (w *auditWriter) backlog() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending + w.replaying
}

// close refuses new records, writes those queued and stops the writer. If
// ctx ends first (the store is down), it stops retrying and says how many
// records it could not write; they are logged by count, never by content.
func (w *auditWriter) close(ctx context.Context) error {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	select {
	case w.hurry <- struct{}{}:
	default:
	}
	select {
	case <-w.done:
		return w.closeJournal()
	case <-ctx.Done():
	}
	w.stop()
	<-w.done
	var err error
	if n := w.backlog(); n > 0 {
		msg := "audit: records not written at shutdown"
		if w.journal != nil {
			msg += "; the journal keeps them for the next start"
		}
		w.log.Error(msg, "records", n)
		err = fmt.Errorf("audit: %d records not written at shutdown: %w", n, context.Cause(ctx))
	}
	return errors.Join(err, w.closeJournal())
}

// closeJournal releases the journal, removing its segments when every
// record is committed (they stay otherwise, for the next start).
func (w *auditWriter) closeJournal() error {
	if w.journal == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.journal.Close()
}

func (w *auditWriter) run() {
	defer close(w.done)
	for {
		w.linger()
		w.mu.Lock()
		n := min(len(w.queue), auditMaxBatch)
		batch := make([]*store.AuditRecord, n)
		copy(batch, w.queue)
		// Shift rather than reslice, so that the queue's array is reused
		// instead of growing with every record ever written.
		kept := copy(w.queue, w.queue[n:])
		clear(w.queue[kept:]) // no stale references past the end
		w.queue = w.queue[:kept]
		closing := w.closing
		w.mu.Unlock()
		if n == 0 {
			if closing {
				return
			}
			select {
			case <-w.wake:
			case <-w.ctx.Done():
				return
			}
			continue
		}
		if !w.write(batch) {
			return // Close gave up; the batch is counted in backlog
		}
		w.mu.Lock()
		replayed := min(n, w.replaying) // the queue's head
		w.replaying -= replayed
		w.pending -= n - replayed
		w.committed += uint64(n)
		if w.journal != nil {
			if err := w.journal.Committed(w.committed); err != nil {
				// Segments not removed are read back at the next start;
				// the store skips their records.
				w.log.Warn("audit journal: removing committed records", "error", err.Error())
			}
		}
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
}

// linger lets a batch grow before it is written. A small batch nobody
// waits for may grow for up to auditLinger from when linger began (Close
// and the first request to wait for a commit cut it short): nobody's
// answer waits for it (reads in BRIDGE_AUDIT_WAIT=queue mode wait only
// for room), and the records a crash can lose stay bounded by the buffer.
// A batch that requests wait for gathers the records of the requests in
// flight that have not queued theirs yet (active), for up to the
// writer's gather time, and goes as soon as none is left; each new waiter
// and each request leaving wakes it to check.
func (w *auditWriter) linger() {
	var lingerEnd, gatherEnd time.Time
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		w.mu.Lock()
		queued, waiters, active, closing, gather, lingerFor := len(w.queue), w.waiters, w.active, w.closing, w.gather, w.lingerFor
		w.mu.Unlock()
		if queued == 0 || closing || queued >= min(auditLingerBatch, w.capacity/2) {
			return
		}
		var end time.Time
		switch {
		case waiters > 0 && active <= 0:
			return // no record can come: the waiters' batch goes now
		case waiters > 0:
			if gatherEnd.IsZero() {
				gatherEnd = time.Now().Add(gather)
			}
			end = gatherEnd
		case !gatherEnd.IsZero():
			return // its waiters gave up; it gathered long enough
		default:
			if lingerEnd.IsZero() {
				lingerEnd = time.Now().Add(lingerFor)
			}
			end = lingerEnd
		}
		wait := time.Until(end)
		if wait <= 0 {
			return
		}
		if t == nil {
			t = time.NewTimer(wait)
		} else {
			t.Reset(wait)
		}
		select {
		case <-t.C:
		case <-w.hurry:
		case <-w.ctx.Done():
			return
		}
	}
}

// write stores a batch, retrying with backoff until it is written; false
// when Close gave up first.
func (w *auditWriter) write(batch []*store.AuditRecord) bool {
	delay := auditMinBackoff
	for attempt := 1; ; attempt++ {
		err := w.commit(batch)
		switch {
		case err == nil:
			if attempt > 1 {
				w.log.Info("audit: batch written after retries", "records", len(batch), "attempts", attempt)
			}
			return true
		case errors.Is(err, store.ErrInvalid):
			// A bug, not an outage: retrying cannot help, and holding the
			// batch would stop the audit trail. Write the records one by
			// one, so that only the invalid one is left out, and say so.
			return w.writeEach(batch)
		}
		// Store errors name operations and kinds, never record contents.
		w.log.Error("audit: writing a batch failed; retrying", "records", len(batch), "attempt", attempt, "error", err.Error())
		select {
		case <-time.After(delay):
		case <-w.ctx.Done():
			return false
		}
		delay = min(2*delay, auditMaxBackoff)
	}
}

// commit makes one attempt to write a batch, and counts it.
func (w *auditWriter) commit(batch []*store.AuditRecord) error {
	ctx, cancel := context.WithTimeout(w.ctx, auditAttemptTimeout)
	defer cancel()
	start := time.Now()
	err := w.st.RecordAudits(ctx, batch)
	w.metrics.AuditBatch(len(batch), time.Since(start), err)
	return err
}

func (w *auditWriter) writeEach(batch []*store.AuditRecord) bool {
	for _, rec := range batch {
		for {
			err := w.commit([]*store.AuditRecord{rec})
			if err == nil {
				break
			}
			if errors.Is(err, store.ErrInvalid) {
				w.log.Error("audit: record refused as invalid", "correlation_id", rec.CorrelationID,
					"route", rec.RequestPath, "error", err.Error())
				break
			}
			select {
			case <-time.After(auditMinBackoff):
			case <-w.ctx.Done():
				return false
			}
		}
	}
	return true
}
