package server

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// throttleWindow is how long the 429s of one client are gathered into one
// audit record.
const throttleWindow = time.Minute

// maxThrottleWindows bounds the clients tracked at once; past it, windows
// that have ended are swept.
const maxThrottleWindows = 4096

// throttleAudit keeps 429 answers in the audit trail without letting a
// flood of them flood it: per client and minute, the first is recorded as
// itself, the rest are counted, and when the minute ends one record says
// how many there were and when. Nothing is silently dropped; a busy client
// costs at most two records a minute.
type throttleAudit struct {
	mu      sync.Mutex
	windows map[string]*throttled
	emit    func(*store.AuditRecord)
	now     func() time.Time
	// emitting counts summaries on their way to the audit writer, so
	// that flush, at shutdown, waits for them before the writer closes.
	emitting sync.WaitGroup
}

type throttled struct {
	start, last time.Time
	count       int                // 429s after the first, not yet recorded
	template    *store.AuditRecord // the first, for who and where
	timer       *time.Timer
}

func newThrottleAudit(emit func(*store.AuditRecord)) *throttleAudit {
	return &throttleAudit{windows: map[string]*throttled{}, emit: emit, now: time.Now}
}

// admit reports whether rec, a 429 of client, is recorded as itself; when
// it is not, it has been counted for the summary at the end of the window.
func (t *throttleAudit) admit(client string, rec *store.AuditRecord) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	w := t.windows[client]
	if w == nil || now.Sub(w.start) >= throttleWindow && w.count == 0 {
		if len(t.windows) >= maxThrottleWindows {
			t.sweep(now)
		}
		// A copy: rec itself goes to the audit writer, which fills in
		// its id and time while the summary's timer may read this one.
		tpl := *rec
		tpl.EntityRefs, tpl.PatientRefs = slices.Clone(rec.EntityRefs), slices.Clone(rec.PatientRefs)
		t.windows[client] = &throttled{start: now, template: &tpl}
		return true
	}
	w.count++
	w.last = now
	if w.timer == nil {
		w.timer = time.AfterFunc(w.start.Add(throttleWindow).Sub(now), func() { t.summarise(client) })
	}
	return false
}

// sweep forgets windows that have ended with nothing counted.
func (t *throttleAudit) sweep(now time.Time) {
	for k, w := range t.windows {
		if w.count == 0 && now.Sub(w.start) >= throttleWindow {
			delete(t.windows, k)
		}
	}
}

// summarise records the counted 429s of client as one record.
func (t *throttleAudit) summarise(client string) {
	t.mu.Lock()
	w := t.windows[client]
	if w == nil || w.count == 0 {
		t.mu.Unlock()
		return
	}
	delete(t.windows, client)
	t.emitting.Add(1)
	t.mu.Unlock()
	defer t.emitting.Done()
	t.emit(summaryRecord(w))
}

// flush records every window's count at once, for shutdown.
func (t *throttleAudit) flush() {
	t.mu.Lock()
	var out []*store.AuditRecord
	for k, w := range t.windows {
		if w.timer != nil {
			w.timer.Stop()
		}
		if w.count > 0 {
			out = append(out, summaryRecord(w))
		}
		delete(t.windows, k)
	}
	t.mu.Unlock()
	for _, r := range out {
		t.emit(r)
	}
	// A summary whose timer fired just before is still on its way: the
	// writer must not close under it.
	t.emitting.Wait()
}

func summaryRecord(w *throttled) *store.AuditRecord {
	r := *w.template
	r.ID = "" // a new record, not a copy of the first
	r.Recorded = w.last
	r.EntityRefs, r.PatientRefs, r.Query = nil, nil, ""
	r.OutcomeDesc = "HTTP 429: " + strconv.Itoa(w.count) + " more throttled requests from this client between " +
		w.start.UTC().Format(time.RFC3339) + " and " + w.last.UTC().Format(time.RFC3339) + ", recorded as one"
	return &r
}

// emitThrottleSummary queues a summary record; it waits for room like any
// request would, but on its own clock, since no request is waiting on it.
func (s *Server) emitThrottleSummary(rec *store.AuditRecord) {
	ctx, cancel := context.WithTimeout(context.Background(), auditLateEnqueue)
	defer cancel()
	if _, _, err := s.auditor.enqueue(ctx, rec); err != nil {
		s.log.Error("audit: a summary of throttled requests could not be queued", "error", err.Error())
	}
}
