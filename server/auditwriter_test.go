package server

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auditjournal"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite/sqlitetest"
)

// faultyAudit is a real SQLite store whose RecordAudits can be held (gate)
// or made to fail: before writing (failBefore) or after writing, as when
// the connection breaks during the commit (failAfter).
type faultyAudit struct {
	store.Store
	mu                    sync.Mutex
	gate                  chan struct{} // nil: not held
	failBefore, failAfter int
	calls                 int
	sizes                 []int // of the batches written
}

func (f *faultyAudit) RecordAudits(ctx context.Context, batch []*store.AuditRecord) error {
	f.mu.Lock()
	f.calls++
	gate := f.gate
	before := f.failBefore > 0
	if before {
		f.failBefore--
	}
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if before {
		return store.E(store.KindInternal, "injected failure")
	}
	err := f.Store.RecordAudits(ctx, batch)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		f.sizes = append(f.sizes, len(batch))
	}
	if err == nil && f.failAfter > 0 {
		f.failAfter--
		return store.E(store.KindInternal, "injected failure after commit")
	}
	return err
}

func newFaultyAudit(t *testing.T) *faultyAudit {
	return &faultyAudit{Store: sqlitetest.Open(t)}
}

func testRecord(i int) *store.AuditRecord {
	return &store.AuditRecord{Domain: "acme", Action: store.AuditActionRead, Interaction: "read",
		Outcome: store.AuditOutcomeSuccess, CorrelationID: "rec-" + strconv.Itoa(i),
		EntityRefs: []string{"ServiceRequest/s" + strconv.Itoa(i)}, PatientRefs: []string{"Patient/p" + strconv.Itoa(i%3)}}
}

// storedIDs returns the correlation ids of every stored record, as often
// as each is stored.
func storedIDs(t *testing.T, st store.Store) map[string]int {
	t.Helper()
	got := map[string]int{}
	after := ""
	for {
		page, next, err := st.SearchAudit(context.Background(), "acme", store.AuditFilter{Limit: store.MaxSearchLimit, After: after})
		require.NoError(t, err)
		for _, r := range page {
			got[r.CorrelationID]++
		}
		if next == "" {
			return got
		}
		after = next
	}
}

func wantIDs(n int) map[string]int {
	want := map[string]int{}
	for i := range n {
		want["rec-"+strconv.Itoa(i)] = 1
	}
	return want
}

func TestAuditWriterBackPressure(t *testing.T) {
	t.Parallel()
	st := newFaultyAudit(t)
	st.gate = make(chan struct{})
	w := newAuditWriter(st, 4, slog.New(slog.DiscardHandler), nil, nil)
	ctx := context.Background()
	for i := range 4 {
		_, _, err := w.enqueue(ctx, testRecord(i))
		require.NoError(t, err)
	}
	assert.Equal(t, 4, w.backlog())

	// Full: a request whose deadline has passed gets no room, and its
	// record is not half-queued.
	done, cancel := context.WithCancel(ctx)
	cancel()
	_, _, err := w.enqueue(done, testRecord(99))
	require.ErrorIs(t, err, errAuditFull)
	assert.Equal(t, 4, w.backlog())

	// Another waits for room, which the first commit makes.
	queued := make(chan error, 1)
	go func() {
		_, _, err := w.enqueue(ctx, testRecord(4))
		queued <- err
	}()
	close(st.gate)
	require.NoError(t, <-queued)
	require.NoError(t, w.close(ctx))
	assert.Equal(t, wantIDs(5), storedIDs(t, st), "every record once, none dropped")
}

// TestAuditWriterGathers: a batch that a request waits for gathers the
// records of the other requests in flight, and goes once none of them may
// still queue one, or when the gathering time is up.
func TestAuditWriterGathers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := newFaultyAudit(t)
	w := newAuditWriter(st, 64, slog.New(slog.DiscardHandler), nil, nil)
	w.mu.Lock()
	w.gather = time.Hour    // only "no request left" can end it in time
	w.lingerFor = time.Hour // nor may a batch nobody waits for go early
	w.mu.Unlock()
	// A request as recordAudit handles it: queued, no longer pending,
	// then waiting for the commit.
	waitFor := func(p *auditPending, rec *store.AuditRecord) <-chan error {
		seq, _, err := w.enqueue(ctx, rec)
		require.NoError(t, err)
		p.leave()
		done := make(chan error, 1)
		go func() { done <- w.wait(ctx, seq) }()
		return done
	}
	waiting := func(n int) func() bool {
		return func() bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.waiters == n
		}
	}
	// Three requests in flight: two wait for their records, the third
	// ends without one.
	begin := func() *auditPending {
		p := &auditPending{}
		w.begin(p)
		return p
	}
	pa, pb, pc := begin(), begin(), begin()
	a := waitFor(pa, testRecord(0))
	eventually(t, waiting(1))
	b := waitFor(pb, testRecord(1))
	eventually(t, waiting(2))
	st.mu.Lock()
	assert.Empty(t, st.sizes, "nothing written while a request in flight may still add a record")
	st.mu.Unlock()
	pc.leave()
	require.NoError(t, <-a)
	require.NoError(t, <-b)
	pa.leave() // again, as the middleware does at the end: no effect
	st.mu.Lock()
	assert.Equal(t, []int{2}, st.sizes, "one batch for both")
	st.mu.Unlock()
	w.mu.Lock()
	assert.Zero(t, w.active)
	w.mu.Unlock()

	// A request in flight that never records: the batch goes when the
	// gathering time is up.
	w.mu.Lock()
	w.gather = 20 * time.Millisecond
	w.mu.Unlock()
	slow := begin()
	require.NoError(t, <-waitFor(begin(), testRecord(2)))
	slow.leave()
	require.NoError(t, w.close(ctx))
	assert.Equal(t, wantIDs(3), storedIDs(t, st))
}

func TestAuditWriterRetries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                  string
		failBefore, failAfter int
	}{
		{"store unavailable", 3, 0},
		// The commit happened but was not confirmed: the retry must
		// neither fail on the records' ids nor write them twice.
		{"commit not confirmed", 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newFaultyAudit(t)
			st.failBefore, st.failAfter = tc.failBefore, tc.failAfter
			w := newAuditWriter(st, 100, slog.New(slog.DiscardHandler), nil, nil)
			var last uint64
			for i := range 20 {
				seq, _, err := w.enqueue(context.Background(), testRecord(i))
				require.NoError(t, err)
				last = seq
			}
			require.NoError(t, w.wait(context.Background(), last))
			assert.Equal(t, wantIDs(20), storedIDs(t, st))
			assert.Greater(t, st.calls, tc.failBefore+tc.failAfter, "retried")
			require.NoError(t, w.close(context.Background()))
		})
	}
}

func TestAuditWriterClose(t *testing.T) {
	t.Parallel()
	t.Run("flushes what is queued", func(t *testing.T) {
		st := newFaultyAudit(t)
		st.gate = make(chan struct{})
		w := newAuditWriter(st, 100, slog.New(slog.DiscardHandler), nil, nil)
		for i := range 50 {
			_, _, err := w.enqueue(context.Background(), testRecord(i))
			require.NoError(t, err)
		}
		close(st.gate)
		require.NoError(t, w.close(context.Background()))
		assert.Equal(t, wantIDs(50), storedIDs(t, st))
		_, _, err := w.enqueue(context.Background(), testRecord(50))
		assert.ErrorIs(t, err, errAuditClosed)
	})
	t.Run("gives up when the store stays down, and says how much is lost", func(t *testing.T) {
		st := newFaultyAudit(t)
		st.failBefore = 1 << 30
		w := newAuditWriter(st, 100, slog.New(slog.DiscardHandler), nil, nil)
		for i := range 7 {
			_, _, err := w.enqueue(context.Background(), testRecord(i))
			require.NoError(t, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := w.close(ctx)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "7 records not written")
	})
}

// TestFullAuditBufferWithholdsAnswers: when the store takes no audit
// record and the buffer is full, a read waits for room until its deadline
// and then gets a 503 instead of the data; once the store answers again,
// every record of an answer sent is written.
func TestFullAuditBufferWithholdsAnswers(t *testing.T) {
	t.Parallel()
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Seed: 1, Appointments: 20})
	require.NoError(t, err)
	t.Cleanup(func() { sim.Close() })
	client, err := qubs.New(qubs.Config{BaseURL: sim.URL, TokenURL: sim.TokenURL(), ClientID: qubssim.DefaultClientID,
		ClientSecret: qubssim.DefaultClientSecret, AuthStyle: oauth2.AuthStyleInParams})
	require.NoError(t, err)
	st := newFaultyAudit(t)
	st.gate = make(chan struct{})
	s := New(Config{QUBS: client, Store: st, AuditBuffer: 2, CursorKey: []byte("k"),
		RequestTimeout: 300 * time.Millisecond, Kick: func() {}})
	h := s.engine
	get := func(cid string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/fhir/acme/ServiceRequest?_count=1", nil)
		req.Header.Set(HeaderCorrelationID, cid)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	// The first two fill the buffer (the writer holds the first batch).
	for _, cid := range []string{"rec-0", "rec-1"} {
		r := get(cid)
		require.Equal(t, http.StatusOK, r.Code, "%s", r.Body)
	}
	eventually(t, func() bool { return s.auditor.backlog() == 2 })
	r := get("withheld")
	assert.Equal(t, http.StatusServiceUnavailable, r.Code)
	assert.NotContains(t, r.Body.String(), `"ServiceRequest"`, "no data without an audit record")
	assert.Contains(t, r.Body.String(), "OperationOutcome")

	close(st.gate)
	require.NoError(t, s.Close(context.Background()))
	assert.Equal(t, wantIDs(2), storedIDs(t, st), "every answer sent has its record")
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkAuditRecord is the audit of one 100-entry search page (100
// ServiceRequests and 100 Patients named, as the worklist reports them)
// from 16 concurrent requests: "each" writes every record in its own
// transaction, as the audit did before group commit; "batched" queues it
// for the writer, as requests do now (the run ends with a flush, so the
// writes are all counted). cpu-ns/op is the process's CPU per record,
// background writer included.
func BenchmarkAuditRecord(b *testing.B) {
	page := func(i int) *store.AuditRecord {
		r := &store.AuditRecord{Domain: "acme", Action: store.AuditActionExecute, Interaction: "search-type",
			Outcome: store.AuditOutcomeSuccess, Query: "ServiceRequest?_count", CorrelationID: "bench-" + strconv.Itoa(i),
			RequestPath: "/fhir/:domain/ServiceRequest", AgentID: "ris", NetworkAddr: "127.0.0.1"}
		for j := range 100 {
			r.EntityRefs = append(r.EntityRefs, "ServiceRequest/A"+strconv.Itoa(200000+j))
			r.PatientRefs = append(r.PatientRefs, "Patient/"+strconv.Itoa(230000+j))
		}
		return r
	}
	engines := []struct {
		name string
		open func(b *testing.B) store.Store
	}{
		{"sqlite", func(b *testing.B) store.Store {
			st, err := sqlite.Open(context.Background(), b.TempDir()+"/bridge.db")
			require.NoError(b, err)
			b.Cleanup(func() { st.Close() })
			return st
		}},
		{"postgres", func(b *testing.B) store.Store { return pgtest.Open(b) }},
	}
	for _, eng := range engines {
		b.Run(eng.name+"/each", func(b *testing.B) {
			st := eng.open(b)
			b.SetParallelism(8) // 16 clients on 2 cores
			b.ReportAllocs()
			cpu0 := processCPU()
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := st.RecordAudit(context.Background(), page(int(n.Add(1)))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
		b.Run(eng.name+"/batched", func(b *testing.B) {
			st := eng.open(b)
			w := newAuditWriter(st, DefaultAuditBuffer, slog.New(slog.DiscardHandler), nil, nil)
			b.SetParallelism(8)
			b.ReportAllocs()
			cpu0 := processCPU()
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := w.enqueue(context.Background(), page(int(n.Add(1)))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			require.NoError(b, w.flush(context.Background()))
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
			b.StopTimer()
			require.NoError(b, w.close(context.Background()))
		})
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// copyDir copies the files of dir to a new directory: what the kernel
// holds of a journal when its process is killed.
func copyDir(t *testing.T, dir string) string {
	t.Helper()
	to := t.TempDir()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(to, e.Name()), data, 0o600))
	}
	return to
}

// TestAuditWriterJournal: the records a process journaled and never
// committed are written by the next process's writer before its own, each
// once, those the store had committed already too (the process died
// between a commit and the removal of its segment).
func TestAuditWriterJournal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	j, err := auditjournal.Open(dir, auditjournal.Options{})
	require.NoError(t, err)
	held := newFaultyAudit(t)
	held.gate = make(chan struct{}) // nothing commits before the "crash"
	w := newAuditWriter(held, 64, slog.New(slog.DiscardHandler), nil, j)
	t.Cleanup(func() {
		close(held.gate)
		assert.NoError(t, w.close(ctx))
	})
	var committed []*store.AuditRecord
	for i := range 10 {
		rec := testRecord(i)
		_, journaled, err := w.enqueue(ctx, rec)
		require.NoError(t, err)
		require.True(t, journaled)
		require.NotEmpty(t, rec.ID, "an id before it is journaled")
		if i < 4 {
			c := *rec
			committed = append(committed, &c)
		}
	}
	crashed := copyDir(t, dir)

	st := newFaultyAudit(t)
	require.NoError(t, st.Store.RecordAudits(ctx, committed), "committed before the crash")
	st.failAfter = 1 // and a commit whose answer is lost: written again
	st.gate = make(chan struct{})
	j2, err := auditjournal.Open(crashed, auditjournal.Options{})
	require.NoError(t, err)
	w2 := newAuditWriter(st, 4, slog.New(slog.DiscardHandler), nil, j2)
	assert.Equal(t, 10, w2.backlog())
	// The ten records read back are not in the buffer of four: a new
	// request finds room at once, while none of them is written yet.
	now, cancel := context.WithCancel(ctx)
	cancel()
	_, journaled, err := w2.enqueue(now, testRecord(10))
	require.NoError(t, err, "room for new records while those read back are written again")
	assert.True(t, journaled)
	close(st.gate)
	require.NoError(t, w2.close(ctx))
	assert.Zero(t, w2.backlog())
	assert.Equal(t, wantIDs(11), storedIDs(t, st), "every record once")
	segs, err := filepath.Glob(filepath.Join(crashed, "*.seg"))
	require.NoError(t, err)
	assert.Empty(t, segs, "all committed at close: nothing to read back")
}

// TestAuditWriterJournalFails: a record the journal cannot take (its
// directory is gone) is queued all the same, and enqueue says it is not
// journaled, so that its request waits for the commit (recordAudit).
func TestAuditWriterJournalFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	j, err := auditjournal.Open(dir, auditjournal.Options{SegmentSize: 1}) // a segment a record
	require.NoError(t, err)
	st := newFaultyAudit(t)
	w := newAuditWriter(st, 64, slog.New(slog.DiscardHandler), nil, j)
	_, journaled, err := w.enqueue(ctx, testRecord(0))
	require.NoError(t, err)
	assert.True(t, journaled)
	require.NoError(t, os.RemoveAll(dir))
	for i := 1; i < 3; i++ {
		_, journaled, err = w.enqueue(ctx, testRecord(i))
		require.NoError(t, err)
		assert.False(t, journaled, "no new segment without its directory")
	}
	require.NoError(t, w.flush(ctx))
	assert.Equal(t, wantIDs(3), storedIDs(t, st))
	require.NoError(t, w.close(ctx))
}
