package sqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/storetest"
)

// TestConformanceAuditMoved runs the suite on SQLite with the audit's
// staged patient rows moved into audit_patients as soon as three have
// gathered, so that searches by patient read rows from both tables at
// once (migration 0008); the default, 32,768, leaves them all staged in
// the suite.
func TestConformanceAuditMoved(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "bridge.db"))
		require.NoError(t, err)
		sqlstore.SetAuditMoveAt(s, 3)
		t.Cleanup(func() { assert.NoError(t, s.Close()) })
		return s
	})
}

// TestAuditStagingMoves looks into the file: each way of writing an audit
// record naming one patient (RecordAudit, RecordAudits, a report write's
// own record) stages its patient row, a record naming several stages
// nothing (it names a set, migration 0016), the write that brings the rows
// to the threshold moves them all, and a Store opened on staged rows
// counts them before adding its own.
func TestAuditStagingMoves(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bridge.db")
	open := func() *sqlstore.Store {
		s, err := sqlstore.OpenSQLite(ctx, path)
		require.NoError(t, err)
		sqlstore.SetAuditMoveAt(s, 5)
		return s
	}
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	defer db.Close()
	rows := func() (staged, moved int) {
		t.Helper()
		require.NoError(t, db.QueryRowContext(ctx, `SELECT
			(SELECT count(*) FROM audit_patients_staged), (SELECT count(*) FROM audit_patients)`).Scan(&staged, &moved))
		return staged, moved
	}
	rec := func(patients ...string) *store.AuditRecord {
		return &store.AuditRecord{Domain: "acme", Action: store.AuditActionRead, Interaction: "read",
			Outcome: store.AuditOutcomeSuccess, PatientRefs: patients}
	}

	s := open()
	require.NoError(t, s.RecordAudit(ctx, rec("Patient/1")))
	require.NoError(t, s.RecordAudits(ctx, []*store.AuditRecord{rec("Patient/3"), rec(), rec("Patient/2", "Patient/3")}))
	require.NoError(t, s.RecordAudit(ctx, rec("Patient/2")))
	staged, moved := rows()
	assert.Equal(t, [2]int{3, 0}, [2]int{staged, moved})
	require.NoError(t, s.Close())

	// A new Store does not know the count: it reads it in its first write.
	s = open()
	defer s.Close()
	r := &store.Report{Domain: "acme", ID: "r1", AppointmentID: "A1", PatientRef: "Patient/4", Status: "preliminary",
		Resource: []byte(`{"resourceType":"DiagnosticReport","id":"r1"}`), Submission: []byte(`{}`),
		CreatedAt: time.Now()}
	r.Audit = &store.AuditRecord{Domain: "acme", Action: store.AuditActionCreate, Interaction: "create",
		Outcome: store.AuditOutcomeSuccess, PatientRefs: []string{"Patient/4"},
		EntityRefs: []string{"DiagnosticReport/r1/_history/1"}}
	require.NoError(t, s.CreateReport(ctx, r))
	staged, moved = rows()
	assert.Equal(t, [2]int{4, 0}, [2]int{staged, moved})
	require.NoError(t, s.RecordAudits(ctx, []*store.AuditRecord{rec("Patient/5")}))
	staged, moved = rows()
	assert.Equal(t, [2]int{0, 5}, [2]int{staged, moved}, "the fifth row moves them all")

	for _, p := range []string{"Patient/1", "Patient/4", "Patient/5"} {
		got, _, err := s.SearchAudit(ctx, "acme", store.AuditFilter{PatientRef: p})
		require.NoError(t, err)
		assert.Len(t, got, 1, p)
	}
}

// openAuditCounted opens a SQLite Store and returns it with a count of its
// audit_events rows and staged patient rows, read beside it.
func openAuditCounted(t *testing.T) (*sqlstore.Store, func() (events, staged int)) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := sqlstore.OpenSQLite(ctx, path)
	require.NoError(t, err)
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.NoError(t, db.Close())
		assert.NoError(t, s.Close())
	})
	return s, func() (events, staged int) {
		t.Helper()
		require.NoError(t, db.QueryRowContext(ctx, `SELECT
			(SELECT count(*) FROM audit_events), (SELECT count(*) FROM audit_patients_staged)`).Scan(&events, &staged))
		return events, staged
	}
}

// TestAuditGroupsWriteEachRecordOnce writes batches long enough for
// insertAudits' statements of several records (16 a statement, the rest
// one by one): a batch retried in part, a record given twice in one
// batch, and records naming several patients or none among those naming
// one. Each record is stored once, and each record naming one patient has
// exactly one staged patient row.
func TestAuditGroupsWriteEachRecordOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, counts := openAuditCounted(t)
	next := 0
	rec := func(patients ...string) *store.AuditRecord {
		next++
		return &store.AuditRecord{Domain: "acme", Action: store.AuditActionRead, Interaction: "read",
			Outcome: store.AuditOutcomeSuccess, PatientRefs: patients, CorrelationID: fmt.Sprintf("c%d", next)}
	}
	var first []*store.AuditRecord
	for i := range 20 {
		first = append(first, rec(fmt.Sprintf("Patient/%d", i)))
	}
	first[3] = rec("Patient/a", "Patient/b") // a set: no staged row
	first[17] = rec()                        // no patient
	require.NoError(t, s.RecordAudits(ctx, first))
	events, staged := counts()
	assert.Equal(t, [2]int{20, 18}, [2]int{events, staged})

	// Records 2..17 again (a retried batch), then new ones, one of them
	// twice: the next batch's first group holds 15 old records and a new
	// one, its tail an old one and the new one again.
	again := slices.Clone(first[2:18])
	var fresh []*store.AuditRecord
	for i := range 9 {
		fresh = append(fresh, rec(fmt.Sprintf("Patient/n%d", i)))
	}
	second := append(again, fresh...)
	second = append(second, fresh[0])
	second[5], second[16] = second[16], second[5] // a new record in the group of old ones
	require.NoError(t, s.RecordAudits(ctx, second))
	events, staged = counts()
	assert.Equal(t, [2]int{29, 27}, [2]int{events, staged})

	// A group holding one new record twice.
	var third []*store.AuditRecord
	for i := range 15 {
		third = append(third, rec(fmt.Sprintf("Patient/t%d", i)))
	}
	third = append(third, third[4])
	require.NoError(t, s.RecordAudits(ctx, third))
	events, staged = counts()
	assert.Equal(t, [2]int{44, 42}, [2]int{events, staged})

	// A group of records that all exist (RETURNING gives nothing back),
	// and a record of another domain with the id of one of them.
	other := &store.AuditRecord{Domain: "beta", ID: third[0].ID, Action: store.AuditActionRead, Interaction: "read",
		Outcome: store.AuditOutcomeSuccess, PatientRefs: []string{"Patient/t0"}}
	require.NoError(t, s.RecordAudits(ctx, append(slices.Clone(third[:16]), other)))
	events, staged = counts()
	assert.Equal(t, [2]int{45, 43}, [2]int{events, staged})
	got, _, err := s.SearchAudit(ctx, "beta", store.AuditFilter{PatientRef: "Patient/t0"})
	require.NoError(t, err)
	assert.Len(t, got, 1)

	for _, p := range []string{"Patient/2", "Patient/n0", "Patient/n8", "Patient/a", "Patient/t4"} {
		got, _, err := s.SearchAudit(ctx, "acme", store.AuditFilter{PatientRef: p})
		require.NoError(t, err)
		assert.Len(t, got, 1, p)
	}
}

// TestAuditBatchDeadline writes large batches under deadlines that end
// before, during or after them: each batch is written whole or not at
// all, and a batch that fails says its deadline passed (the statements
// run without the deadline, and once the transaction is rolled back they
// fail with database/sql's own errors, which insertAudits reports as the
// context's: a report write whose request ends there answers 504, not
// 500).
func TestAuditBatchDeadline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, counts := openAuditCounted(t)
	const n = 1000
	written, failed := 0, 0
	for i := range 30 {
		var batch []*store.AuditRecord
		for j := range n {
			batch = append(batch, &store.AuditRecord{Domain: "acme", Action: store.AuditActionRead, Interaction: "read",
				Outcome: store.AuditOutcomeSuccess, PatientRefs: []string{fmt.Sprintf("Patient/%d-%d", i, j)}})
		}
		dctx, cancel := context.WithTimeout(ctx, time.Duration(i+1)*time.Millisecond)
		err := s.RecordAudits(dctx, batch)
		cancel()
		if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded, "attempt %d", i)
			failed++
		} else {
			written++
		}
		events, staged := counts()
		require.Equal(t, [2]int{written * n, written * n}, [2]int{events, staged}, "attempt %d", i)
	}
	t.Logf("%d batches written, %d failed", written, failed)
}

// TestAuditBatchStartsNoGoroutinePerRecord writes a batch of read records
// under a context with a deadline, as the audit writer does, and counts the
// goroutines the process started meanwhile: for such a context the SQLite
// driver starts one per statement unless the statements run without its
// cancellation (insertAudits), which cost 4-10 µs of CPU per record. Not
// parallel: the count is the whole process's.
func TestAuditBatchStartsNoGoroutinePerRecord(t *testing.T) {
	s, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "bridge.db"))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	batch := func(n int) []*store.AuditRecord {
		var b []*store.AuditRecord
		for i := range n {
			b = append(b, &store.AuditRecord{Domain: "acme", Action: store.AuditActionRead, Interaction: "read",
				Outcome: store.AuditOutcomeSuccess, PatientRefs: []string{fmt.Sprintf("Patient/p%d", i)}})
		}
		return b
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, s.RecordAudits(ctx, batch(4))) // the connection and its statements
	// Three groups of 16 and 15 records one by one: 36 statements, each
	// of which started a goroutine before. Now: the transaction's
	// watcher, database/sql's for each group's rows, and room for the
	// runtime's (6-7 seen).
	const n = 63
	before := goroutinesCreated()
	require.NoError(t, s.RecordAudits(ctx, batch(n)))
	assert.Less(t, goroutinesCreated()-before, uint64(16), "goroutines started writing %d records", n)
}

// goroutinesCreated is how many goroutines the process has started.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
