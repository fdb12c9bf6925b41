package sqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, for the raw connection
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
)

// rawStore is a Store and a connection of its own to the same database,
// for looking into tables the Store's interface does not show.
type rawStore struct {
	*sqlstore.Store
	db       *sql.DB
	postgres bool
}

func openRaw(t *testing.T, postgres bool) rawStore {
	t.Helper()
	ctx := context.Background()
	var (
		st  *sqlstore.Store
		db  *sql.DB
		err error
	)
	if postgres {
		dsn := pgtest.DSN(t)
		st, err = sqlstore.OpenPostgres(ctx, dsn)
		require.NoError(t, err)
		u, err := url.Parse(dsn)
		require.NoError(t, err)
		q := u.Query()
		for k := range q {
			if strings.HasPrefix(k, "pool_") { // pgxpool's, not the server's
				q.Del(k)
			}
		}
		u.RawQuery = q.Encode()
		db, err = sql.Open("pgx", u.String())
	} else {
		path := filepath.Join(t.TempDir(), "bridge.db")
		st, err = sqlstore.OpenSQLite(ctx, path)
		require.NoError(t, err)
		db, err = sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		db.Close()
		st.Close()
	})
	return rawStore{st, db, postgres}
}

// exec runs q with ? placeholders, numbered for PostgreSQL, and times in
// each engine's column form.
func (r rawStore) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	if r.postgres {
		for i := 1; strings.Contains(q, "?"); i++ {
			q = strings.Replace(q, "?", fmt.Sprintf("$%d", i), 1)
		}
	}
	for i, a := range args {
		if tm, ok := a.(time.Time); ok && !r.postgres {
			args[i] = tm.UnixMicro()
		}
	}
	_, err := r.db.Exec(q, args...)
	require.NoError(t, err, q)
}

func (r rawStore) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	require.NoError(t, r.db.QueryRow(`SELECT count(*) FROM `+table).Scan(&n))
	return n
}

func pageRecord(id string, at time.Time, patients ...string) *store.AuditRecord {
	return &store.AuditRecord{Domain: "acme", ID: id, Recorded: at, Action: store.AuditActionExecute,
		Interaction: "search-type", Outcome: store.AuditOutcomeSuccess, Query: "ServiceRequest?_count", PatientRefs: patients}
}

// patientAudits is the ids of a patient's records, newest first, read two
// at a time through the cursor, and their count.
func patientAudits(t *testing.T, s store.Audit, patient string) []string {
	t.Helper()
	ctx := context.Background()
	ids := []string{}
	for after := ""; ; {
		page, next, err := s.SearchAudit(ctx, "acme", store.AuditFilter{PatientRef: patient, Limit: 2, After: after})
		require.NoError(t, err)
		for _, a := range page {
			ids = append(ids, a.ID)
		}
		if after = next; next == "" {
			break
		}
	}
	n, err := s.CountAudit(ctx, "acme", store.AuditFilter{PatientRef: patient})
	require.NoError(t, err)
	assert.Equal(t, len(ids), n, "CountAudit(%s)", patient)
	return ids
}

// TestAuditPatientSets looks into the tables of migration 0016 on both
// engines: records naming the same patients share one set, whose patient
// rows are written once whichever way the record is written; a search by
// patient finds records through their sets and, for records written
// before 0016, through audit_patients, in one order; the retention purge
// deletes the sets no record names any more, and a set named again after
// that is written again in full. A record naming one patient names the
// reference itself, with no set rows.
func TestAuditPatientSets(t *testing.T) {
	t.Parallel()
	for _, postgres := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[postgres], func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openRaw(t, postgres)
			t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
			at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

			require.NoError(t, s.RecordAudits(ctx, []*store.AuditRecord{
				pageRecord("p1", at(0), "Patient/1", "Patient/2"),
				pageRecord("p2", at(1000), "Patient/2", "Patient/1", "Patient/2"),
			}))
			require.NoError(t, s.RecordAudit(ctx, pageRecord("p3", at(2000), "Patient/2", "Patient/3")))
			require.NoError(t, s.RecordAudits(ctx, []*store.AuditRecord{pageRecord("p4", at(3000), "Patient/1", "Patient/2")}))
			r := &store.Report{Domain: "acme", ID: "r1", AppointmentID: "A1", PatientRef: "Patient/3", Status: "preliminary",
				Resource: []byte(`{"resourceType":"DiagnosticReport","id":"r1"}`), Submission: []byte(`{}`), CreatedAt: at(3500),
				Audit: &store.AuditRecord{Domain: "acme", ID: "c1", Recorded: at(3500), Action: store.AuditActionCreate,
					Interaction: "create", Outcome: store.AuditOutcomeSuccess, PatientRefs: []string{"Patient/3"}}}
			require.NoError(t, s.CreateReport(ctx, r))
			assert.Equal(t, 2, s.count(t, "audit_sets"), "{1,2}, {2,3}; {3} is the reference itself")
			assert.Equal(t, 4, s.count(t, "audit_set_patients"), "each set's rows once")
			assert.Equal(t, 0, s.count(t, "audit_patients"))

			// A record from before 0016: its own patient row, no set.
			s.exec(t, `INSERT INTO audit_events (domain, id, recorded, action, interaction, outcome, patient_refs)
				VALUES ('acme', 'old', ?, 'E', 'search-type', '0', '["Patient/2"]')`, at(500))
			s.exec(t, `INSERT INTO audit_patients (domain, patient_ref, recorded, audit_id) VALUES ('acme', 'Patient/2', ?, 'old')`, at(500))

			assert.Equal(t, []string{"p4", "p3", "p2", "old", "p1"}, patientAudits(t, s, "Patient/2"))
			assert.Equal(t, []string{"p4", "p2", "p1"}, patientAudits(t, s, "Patient/1"))
			assert.Equal(t, []string{"c1", "p3"}, patientAudits(t, s, "Patient/3"))
			got, _, err := s.SearchAudit(ctx, "acme", store.AuditFilter{PatientRef: "Patient/2", Since: at(500), Until: at(2000)})
			require.NoError(t, err)
			assert.Len(t, got, 2, "p2 and old: the time filter applies to both arms")

			// p1, old, p2 and p3 go: {1,2} is still named by p4, {2,3} by
			// nothing.
			n, err := s.PurgeAuditBefore(ctx, at(2500))
			require.NoError(t, err)
			assert.Equal(t, 4, n)
			assert.Equal(t, 1, s.count(t, "audit_sets"))
			assert.Equal(t, 2, s.count(t, "audit_set_patients"))
			assert.Equal(t, 0, s.count(t, "audit_patients"))
			assert.Equal(t, []string{"p4"}, patientAudits(t, s, "Patient/2"))
			assert.Equal(t, []string{"c1"}, patientAudits(t, s, "Patient/3"))

			require.NoError(t, s.RecordAudit(ctx, pageRecord("p5", at(4000), "Patient/3", "Patient/2")))
			assert.Equal(t, 2, s.count(t, "audit_sets"))
			assert.Equal(t, 4, s.count(t, "audit_set_patients"))
			assert.Equal(t, []string{"p5", "c1"}, patientAudits(t, s, "Patient/3"))

			n, err = s.PurgeAuditBefore(ctx, at(5000))
			require.NoError(t, err)
			assert.Equal(t, 3, n)
			assert.Equal(t, 0, s.count(t, "audit_sets"))
			assert.Equal(t, 0, s.count(t, "audit_set_patients"))
		})
	}
}

// TestAuditSetsPurgeRace: on PostgreSQL, where audit batches and the
// retention purge run at once (replicas), a batch naming a set the purge
// is deleting must not commit a record the search by patient cannot find.
// Each round names a fresh set from an old record, then writes a record
// naming it (recorded later, so the purge keeps it) while the purge
// deletes the old one and, finding no record naming the set, the set.
func TestAuditSetsPurgeRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openRaw(t, true)
	future := time.Now().Add(time.Hour)
	const rounds = 150
	for i := range rounds {
		patient := fmt.Sprintf("Patient/%d", i)
		// Two patients: a record naming one has no set rows to delete.
		require.NoError(t, s.RecordAudit(ctx, pageRecord(fmt.Sprintf("old-%d", i), time.Now().Add(-time.Hour), patient, "Patient/x")))
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			assert.NoError(t, s.RecordAudits(ctx, []*store.AuditRecord{pageRecord(fmt.Sprintf("new-%d", i), future, patient, "Patient/x")}))
		}()
		go func() {
			defer wg.Done()
			_, err := s.PurgeAuditBefore(ctx, time.Now())
			assert.NoError(t, err)
		}()
		wg.Wait()
		require.Equal(t, []string{fmt.Sprintf("new-%d", i)}, patientAudits(t, s, patient), "round %d", i)
	}
}

// TestPostgresAuditBatchRefused: a batch one of whose statements fails
// in the pipeline (recordAudits) writes nothing, is reported invalid when
// PostgreSQL refuses its data (so that the audit writer sets that record
// aside rather than retrying the batch for ever), and leaves the pool
// usable: here one connection, so a transaction left open would fail the
// batches after it.
func TestPostgresAuditBatchRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := strings.Replace(pgtest.DSN(t), "pool_max_conns=4", "pool_max_conns=1", 1)
	st, err := sqlstore.OpenPostgres(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	// What PrepareAudit cannot foresee, as a data exception (class 22).
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	q := u.Query()
	q.Del("pool_max_conns") // pgxpool's, not the server's
	u.RawQuery = q.Encode()
	db, err := sql.Open("pgx", u.String())
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	_, err = db.Exec(`CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.outcome_desc = 'refuse me' THEN
				RAISE EXCEPTION 'refused' USING ERRCODE = '22023';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_audit()`)
	require.NoError(t, err)

	at := time.Now().UTC().Truncate(time.Microsecond)
	// Two records, written with INSERT; and 200, written with COPY
	// (recordAudits), the refused one among them.
	for _, size := range []int{2, 200} {
		for _, readsOnly := range []bool{true, false} {
			batch := []*store.AuditRecord{pageRecord(fmt.Sprintf("good-%d-%t", size, readsOnly), at, "Patient/p1", "Patient/p2")}
			for i := 2; i < size; i++ {
				batch = append(batch, pageRecord(fmt.Sprintf("more-%d-%t-%d", size, readsOnly, i), at, "Patient/p5"))
			}
			bad := pageRecord(fmt.Sprintf("bad-%d-%t", size, readsOnly), at, "Patient/p3", "Patient/p4")
			bad.OutcomeDesc = "refuse me"
			if !readsOnly {
				bad.Outcome = store.AuditOutcomeMinorFailure
			}
			batch = slices.Insert(batch, len(batch)/2, bad)
			err := st.RecordAudits(ctx, batch)
			require.ErrorIs(t, err, store.ErrInvalid, "%d records", size)
			assert.NotContains(t, err.Error(), "refuse me", "the data is not quoted")
			assert.Empty(t, patientAudits(t, st, "Patient/p1"), "nothing of a refused batch")
			assert.Empty(t, patientAudits(t, st, "Patient/p5"), "nothing of a refused batch")
		}
	}
	for i := range 3 {
		require.NoError(t, st.RecordAudits(ctx, []*store.AuditRecord{pageRecord("next-"+strconv.Itoa(i), at, "Patient/p1", "Patient/p2")}))
	}
	var big []*store.AuditRecord
	for i := range 200 {
		big = append(big, pageRecord("big-"+strconv.Itoa(i), at, "Patient/p5"))
	}
	require.NoError(t, st.RecordAudits(ctx, big), "the one connection is usable after a refused COPY")
	assert.Len(t, patientAudits(t, st, "Patient/p1"), 3)
	assert.Len(t, patientAudits(t, st, "Patient/p2"), 3)
	assert.Len(t, patientAudits(t, st, "Patient/p5"), 200)
}

// TestAuditHostileText: a NUL or bytes that are not UTF-8 in the text a
// client chose (a parameter name, a correlation id) are stored replaced,
// on both engines, instead of failing the batch they are in.
func TestAuditHostileText(t *testing.T) {
	t.Parallel()
	for _, postgres := range []bool{false, true} {
		r := openRaw(t, postgres)
		rec := pageRecord("hostile", time.Now().UTC(), "Patient/p1", "Patient/p2")
		rec.Query, rec.CorrelationID = "ServiceRequest?\x00,a\xff", "c\x00d"
		require.NoError(t, r.RecordAudits(context.Background(), []*store.AuditRecord{rec, pageRecord("fine", time.Now().UTC(), "Patient/p1")}))
		got, err := r.AuditEvent(context.Background(), "acme", "hostile")
		require.NoError(t, err)
		assert.Equal(t, "ServiceRequest?\uFFFD,a\uFFFD", got.Query)
		assert.Equal(t, "c\uFFFDd", got.CorrelationID)
		assert.Len(t, patientAudits(t, r, "Patient/p1"), 2)
	}
}

// TestAuditLargeBatchColumns writes a batch large enough for PostgreSQL's
// COPY (recordAudits), every field of every record its own non-empty
// value, records naming no patient, one, or several among them, and reads
// each back whole; on PostgreSQL a record naming no patient has no patient
// set (NULL, as the smaller batches' INSERT writes it). Both engines, so
// that the two agree.
func TestAuditLargeBatchColumns(t *testing.T) {
	t.Parallel()
	for _, postgres := range []bool{false, true} {
		r := openRaw(t, postgres)
		at := time.Now().UTC().Truncate(time.Microsecond)
		var batch []*store.AuditRecord
		patientless := 0
		for i := range 200 {
			a := &store.AuditRecord{Domain: "acme", ID: fmt.Sprintf("col-%03d", i), Recorded: at.Add(time.Duration(i) * time.Millisecond),
				Action: store.AuditActionRead, Interaction: store.AuditInteractions[i%len(store.AuditInteractions)], Outcome: store.AuditOutcomeSuccess,
				OutcomeDesc: "desc-" + strconv.Itoa(i), AgentID: "agent-" + strconv.Itoa(i), AgentMethod: "method-" + strconv.Itoa(i),
				TokenID: "token-" + strconv.Itoa(i), NetworkAddr: "10.0.0." + strconv.Itoa(i), Query: "ServiceRequest?p" + strconv.Itoa(i),
				CorrelationID: "corr-" + strconv.Itoa(i), RequestPath: "/path/" + strconv.Itoa(i),
				EntityRefs: []string{"ServiceRequest/s" + strconv.Itoa(i)}}
			switch i % 3 {
			case 0:
				patientless++
			case 1:
				a.PatientRefs = []string{"Patient/one-" + strconv.Itoa(i)}
			case 2:
				a.PatientRefs = []string{"Patient/many", "Patient/many-" + strconv.Itoa(i)}
			}
			batch = append(batch, a)
		}
		require.NoError(t, r.RecordAudits(context.Background(), batch))
		for _, want := range batch {
			got, err := r.AuditEvent(context.Background(), "acme", want.ID)
			require.NoError(t, err)
			require.Equal(t, want, got, "postgres=%t", postgres)
		}
		if postgres { // SQLite stages a lone patient instead (auditstage.go)
			var nulls int
			require.NoError(t, r.db.QueryRow(`SELECT count(*) FROM audit_events WHERE id LIKE 'col-%' AND patient_set IS NULL`).Scan(&nulls))
			assert.Equal(t, patientless, nulls, "no patient set for a record naming none")
			var set string
			require.NoError(t, r.db.QueryRow(`SELECT patient_set FROM audit_events WHERE id = 'col-001'`).Scan(&set))
			assert.Equal(t, "Patient/one-1", set, "a lone patient is its own set")
		}
		assert.Equal(t, []string{"col-001"}, patientAudits(t, r, "Patient/one-1"))
		assert.Len(t, patientAudits(t, r, "Patient/many"), 66)
	}
}

// TestPostgresAuditBatchCancelled writes large batches (COPY) under
// deadlines that end before, during or after them: each batch is written
// whole or not at all, and the store writes the next one. A failed batch
// may still be whole: a deadline that ends while the COMMIT's answer is on
// its way loses the answer, not the commit. So a failed batch is retried,
// as the audit writer retries it, and must then be there exactly once.
func TestPostgresAuditBatchCancelled(t *testing.T) {
	t.Parallel()
	r := openRaw(t, true)
	const n = 1000
	written, failed := 0, 0
	for i := range 20 {
		var batch []*store.AuditRecord
		for j := range n {
			batch = append(batch, &store.AuditRecord{Domain: "acme", ID: fmt.Sprintf("cancel-%02d-%04d", i, j), Action: store.AuditActionRead,
				Interaction: "read", Outcome: store.AuditOutcomeSuccess, PatientRefs: []string{fmt.Sprintf("Patient/%d-%d", i, j%50)}})
		}
		// A cancelled statement closes its connection, so the next
		// batch connects anew: the deadlines grow past that too.
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i+1)*10*time.Millisecond)
		err := r.RecordAudits(ctx, batch)
		cancel()
		var got int
		require.NoError(t, r.db.QueryRow(`SELECT count(*) FROM audit_events WHERE id LIKE $1`, fmt.Sprintf("cancel-%02d-%%", i)).Scan(&got))
		if err != nil {
			failed++
			if got != 0 {
				assert.Equal(t, n, got, "batch %d failed (%v) and left part of its records", i, err)
			}
			require.NoError(t, r.RecordAudits(context.Background(), batch), "batch %d again", i)
			require.NoError(t, r.db.QueryRow(`SELECT count(*) FROM audit_events WHERE id LIKE $1`, fmt.Sprintf("cancel-%02d-%%", i)).Scan(&got))
			assert.Equal(t, n, got, "batch %d written again: once", i)
		} else {
			written++
			assert.Equal(t, n, got, "batch %d", i)
		}
	}
	t.Logf("%d batches written, %d failed", written, failed)
	last := []*store.AuditRecord{}
	for j := range 200 {
		last = append(last, pageRecord(fmt.Sprintf("after-%d", j), time.Now().UTC(), "Patient/after"))
	}
	require.NoError(t, r.RecordAudits(context.Background(), last), "the store writes on after the cancellations")
	assert.Len(t, patientAudits(t, r, "Patient/after"), 200)
}
