package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// sqliteReadConns is the size of the read pool: enough for a few
// concurrent FHIR reads and searches on a 2-core machine; more buys
// nothing with SQLite.
const sqliteReadConns = 4

// busyTimeout is how long a connection waits for another process's lock
// before SQLITE_BUSY. Long, because the alternative is a failed request.
const busyTimeout = 10 * time.Second

// OpenSQLite opens (creating it if needed) the SQLite database at path and
// applies the embedded migrations that it lacks. path is a file name;
// ":memory:" is refused because the read and write pools must share one
// database. Errors: store.ErrInvalid for an unusable path; anything else
// is internal.
//
// SQLite allows one writer at a time. The Store therefore keeps two pools
// on the same file: a write pool of exactly one connection whose
// transactions begin IMMEDIATE (they take the write lock up front, so a
// transaction that read something can never fail to upgrade to writing),
// and a read pool of a few query-only connections that WAL mode lets read
// while the writer writes. Within one process writers queue in the pool
// instead of spinning on SQLITE_BUSY; between processes sharing the file
// (a second Open, a backup tool) busy_timeout makes them wait.
func OpenSQLite(ctx context.Context, path string) (_ *Store, err error) {
	defer store.Wrap(&err, "sqlite.Open")
	if path == "" || path == ":memory:" || strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") {
		return nil, store.E(store.KindInvalid, "sqlite path must be a plain file name")
	}
	// The file holds PHI: create it readable by the bridge's user only.
	// SQLite gives the -wal and -shm files the same permissions.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	pragmas := func(extra ...string) string {
		q := url.Values{}
		// busy_timeout first: the pragmas after it may need a lock.
		q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
		q.Add("_pragma", "foreign_keys(1)")
		// NORMAL is durable in WAL mode except for the last commits on
		// power loss, never corrupting; FULL would fsync every commit.
		q.Add("_pragma", "synchronous(NORMAL)")
		// Overwrite deleted content with zeros, so that purged PHI does not
		// linger in free pages of the file.
		q.Add("_pragma", "secure_delete(1)")
		for _, e := range extra {
			k, v, _ := strings.Cut(e, "=")
			q.Add(k, v)
		}
		return path + "?" + q.Encode()
	}

	w, err := sql.Open("sqlite", pragmas("_txlock=immediate", "_pragma=wal_autocheckpoint(0)"))
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	// WAL is a property of the file, set once; doing it outside the
	// pragma list lets a concurrent Open's lock be waited for like any
	// other (busy_timeout), and lets a failure say what failed.
	mode, err := setWAL(ctx, w)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("setting WAL mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		w.Close()
		return nil, fmt.Errorf("journal mode is %q, want wal", mode)
	}
	r, err := sql.Open("sqlite", pragmas("_pragma=query_only(1)", "_pragma=mmap_size(1073741824)"))
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(sqliteReadConns)
	r.SetMaxIdleConns(sqliteReadConns)
	files, err := openArtifactFiles(path)
	if err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	d := &sqliteDialect{w: w, staging: newAuditStaging(), files: files}
	s, err := open(ctx, d, w, r)
	if err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	if _, err := files.sweep(ctx, s); err != nil {
		s.Close()
		return nil, fmt.Errorf("sweeping the artifact directory: %w", err)
	}
	if err := d.prepareAudits(ctx); err != nil {
		s.Close()
		return nil, err
	}
	c, err := sql.Open("sqlite", pragmas())
	if err != nil {
		s.Close()
		return nil, err
	}
	c.SetMaxOpenConns(1)
	d.ckpt = startCheckpointer(c)
	s.closers = append(s.closers, d.ckpt.close)
	return s, nil
}

// setWAL switches the file to WAL mode and returns the mode it is in.
// The switch needs the file's exclusive lock, and when a concurrent Open
// holds a lock SQLite may answer SQLITE_BUSY at once, without waiting for
// busy_timeout (TestReplicas/ConcurrentOpen saw it now and then): so it is
// retried, for as long as busy_timeout would have waited.
func setWAL(ctx context.Context, w *sql.DB) (mode string, err error) {
	deadline := time.Now().Add(busyTimeout)
	for delay := 5 * time.Millisecond; ; delay = min(2*delay, 200*time.Millisecond) {
		err = w.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode)
		var code interface{ Code() int }
		if err == nil || !errors.As(err, &code) || code.Code()&0xff != sqliteBusy || time.Now().After(deadline) {
			return mode, err
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return "", err
		}
	}
}

// sqliteBusy is SQLITE_BUSY, the primary result code (the low byte) of a
// lock another connection holds.
const sqliteBusy = 5

// analyze does nothing: without statistics SQLite's planner already
// walks the (domain, key, id) indexes for a page, and with them
// (sqlite_stat1) measured no better (BenchmarkSearchWorklistPage).
func (d *sqliteDialect) analyze(context.Context, *sql.DB, ...string) error { return nil }

// sqliteDialect: ? placeholders, INTEGER microseconds, no row locks (every
// write transaction holds the database's write lock), json_each.
type sqliteDialect struct {
	w *sql.DB // the write pool, where insertAudits' statements are prepared
	// ckpt checkpoints the WAL off the write path (checkpoint.go).
	ckpt *checkpointer
	// insertAudits' and insertAuditSets' prepared statements; eventGroup
	// and stagedGroup write auditGroup rows at once.
	events, staged, setExists, setInsert, setPatients *sql.Stmt
	eventGroup, stagedGroup                           *sql.Stmt
	// staging counts and moves the staged audit patient rows.
	staging *auditStaging
	// files holds the artifacts' bytes (artifactfiles.go).
	files *artifactFiles
}

func (*sqliteDialect) name() string                              { return "sqlite" }
func (*sqliteDialect) rebind(query string) string                { return query }
func (*sqliteDialect) time(t time.Time) any                      { return t.UnixMicro() }
func (*sqliteDialect) forUpdate() string                         { return "" }
func (*sqliteDialect) skipLocked() string                        { return "" }
func (*sqliteDialect) readTx() *sql.TxOptions                    { return nil }
func (*sqliteDialect) migrations() (fs.FS, string)               { return sqliteMigrations, "migrations/sqlite" }
func (*sqliteDialect) lockMigrations(context.Context, *tx) error { return nil }
func (*sqliteDialect) lockEvents(context.Context, *tx) error     { return nil }

func (*sqliteDialect) jsonElements(expr, alias string) string {
	return "json_each(" + expr + ") AS " + alias
}

func (*sqliteDialect) versionTable() string {
	return `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL)`
}

func (d *sqliteDialect) artifactFiles() *artifactFiles { return d.files }
func (d *sqliteDialect) auditStaging() *auditStaging   { return d.staging }

// lockAuditSets: nothing to lock, the write transactions are serial.
func (*sqliteDialect) lockAuditSets(context.Context, *tx, bool) error { return nil }

// appendChunks appends nothing: SQLite keeps artifacts' bytes in files,
// and its report_artifact_chunks table stays empty (migration 0015). A
// row naming chunks reads short, which checkChunked refuses.
func (*sqliteDialect) appendChunks(_ context.Context, _ q, dst []byte, _, _ string, _, _ int) ([]byte, error) {
	return dst, nil
}

// insertArtifacts writes each artifact's row naming the file that holds
// its bytes (migration 0012; writeVersion wrote the files).
func (d *sqliteDialect) insertArtifacts(ctx context.Context, tx *tx, r *store.Report, files []string) error {
	for i, a := range r.Artifacts {
		var file any // NULL: no bytes
		if files[i] != "" {
			file = files[i]
		}
		if _, err := tx.exec(ctx, `INSERT INTO report_artifacts
			(domain, report_id, version, idx, file_name, content_type, size, sha256, binary_id, data_file)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.Domain, r.ID, r.Version, a.Index, a.FileName, a.ContentType, a.Size, a.SHA256, a.BinaryID, file); err != nil {
			return err
		}
	}
	return nil
}

// insertAudits writes the batch, auditGroup records a statement and the
// rest one by one, and its patient sets (insertAuditSets). What a
// statement costs to parse showed more than what it does, so the
// statements are prepared once per store, not once per batch. INSERT OR
// IGNORE cannot abort half-way, so SQLite keeps no statement journal for
// it: a record that exists (a retried batch) is skipped, and the group's
// RETURNING tells which were written; the other constraints (NOT NULL,
// the CHECKs) are checked by sqlutil.PrepareAudit first, so IGNORE never
// hides an invalid record.
//
// A record naming one patient (a read) names no set here: its patient row
// is appended to audit_patients_staged and moved into audit_patients with
// the others once auditStagedRows have gathered (migration 0008). An index
// entry by patient written with each read landed on a leaf of its own
// patient, and SQLite's WAL writes a whole page per leaf a commit touched:
// about 15 µs more CPU a read, growing with the trail (docs/audit.md).
//
// The statements writing the records and their staged rows run under ctx
// without its cancellation: for a context that can end, the driver starts
// a goroutine per statement to interrupt it, which cost 4-10 µs of CPU per
// record, 10-20 % of a read's record (BenchmarkRecordAudits, whose context
// has a deadline as the audit writer's does). database/sql still starts
// one for each group's rows (it watches the transaction's context): one
// per 16 records. Nothing is lost by it: these statements write a few
// rows each on the connection the transaction already holds, and if ctx
// ends the transaction is rolled back (database/sql watches ctx for it)
// once the statement running finishes, so the next one fails and the
// batch fails whole; that failure is then reported as ctx's error, as a
// statement run under ctx would have reported it (a report write whose
// request ends here answers as for any other ended request). The sets
// and the move of staged rows, fewer and longer statements, keep ctx.
func (d *sqliteDialect) insertAudits(ctx context.Context, tx *tx, batch []*store.AuditRecord) (err error) {
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = ctx.Err()
		}
	}()
	stmtCtx := context.WithoutCancel(ctx)
	ids, sets := patientSets(batch)
	// stage are the records written now that name one patient: a
	// record that exists already (a retried batch) is neither written
	// nor staged again.
	stage := make([]*store.AuditRecord, 0, len(batch))
	args := make([]any, 0, auditGroup*auditEventValues)
	group, single := tx.tx.StmtContext(stmtCtx, d.eventGroup), tx.tx.StmtContext(stmtCtx, d.events)
	err = inGroups(len(batch), func(i, n int) error {
		args = args[:0]
		for j := i; j < i+n; j++ {
			args = auditEventArgs(args, batch[j], ids[j])
		}
		if n == 1 {
			res, err := single.ExecContext(stmtCtx, args...)
			if err != nil {
				return err
			}
			if affected, err := res.RowsAffected(); err != nil {
				return err
			} else if affected > 0 && sqlutil.SingletonSet(ids[i]) {
				stage = append(stage, batch[i])
			}
			return nil
		}
		written, err := queryWritten(stmtCtx, group, args)
		if err != nil {
			return err
		}
		for j := i; j < i+n; j++ {
			a := batch[j]
			// Each written key once: a record given twice in a batch is
			// written, and staged, once.
			if k := slices.Index(written, auditKey{a.Domain, a.ID}); k >= 0 {
				written[k] = auditKey{}
				if sqlutil.SingletonSet(ids[j]) {
					stage = append(stage, a)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := d.stageAuditPatients(stmtCtx, tx, stage, args); err != nil {
		return err
	}
	if err := d.insertAuditSets(ctx, tx, sets); err != nil {
		return err
	}
	return d.staging.added(ctx, tx, len(stage))
}

// auditGroup is how many records insertAudits writes with one statement,
// and auditEventValues how many values a record's audit_events row
// takes. One statement a record spent more on the statement (its
// cursors on the table and its four indexes, opened and closed; its
// step and reset) than on the row: 38 µs of CPU a read's record
// one by one, about 24 in groups of 16, which is also as well as 64 did
// (BenchmarkRecordAudits/sqlite/read). A batch's last records, fewer than
// a group, go one by one.
const (
	auditGroup       = 16
	auditEventValues = 17
)

// auditKey is an audit record's key in audit_events.
type auditKey struct{ domain, id string }

// auditEventArgs appends a's values in the order of insertAudits'
// statements; set is its patient set (patientSets), of which a record
// naming one patient keeps none in the row (its patient row is staged).
func auditEventArgs(args []any, a *store.AuditRecord, set string) []any {
	if sqlutil.SingletonSet(set) {
		set = ""
	}
	return append(args, a.Domain, a.ID, a.Recorded.UnixMicro(), a.Action, a.Interaction, a.Outcome,
		a.OutcomeDesc, a.AgentID, a.AgentMethod, a.TokenID, a.NetworkAddr, sqlutil.EncodeRefs(a.PatientRefs),
		sqlutil.EncodeRefs(a.EntityRefs), a.Query, a.CorrelationID, a.RequestPath, nullString(set))
}

// queryWritten runs a group's INSERT OR IGNORE ... RETURNING, which
// returns the keys of the rows it wrote: the others existed already.
func queryWritten(ctx context.Context, stmt *sql.Stmt, args []any) ([]auditKey, error) {
	rows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	written := make([]auditKey, 0, auditGroup)
	for rows.Next() {
		var k auditKey
		if err := rows.Scan(&k.domain, &k.id); err != nil {
			return nil, err
		}
		written = append(written, k)
	}
	return written, rows.Err()
}

// stageAuditPatients appends the patient row of each record, which names
// one patient, to audit_patients_staged: auditGroup rows a statement, the
// rest one by one. args is scratch space.
func (d *sqliteDialect) stageAuditPatients(ctx context.Context, tx *tx, recs []*store.AuditRecord, args []any) error {
	group, single := tx.tx.StmtContext(ctx, d.stagedGroup), tx.tx.StmtContext(ctx, d.staged)
	return inGroups(len(recs), func(i, n int) error {
		args = args[:0]
		for _, a := range recs[i : i+n] {
			args = append(args, a.Domain, a.PatientRefs[0], a.Recorded.UnixMicro(), a.ID)
		}
		stmt := group
		if n == 1 {
			stmt = single
		}
		_, err := stmt.ExecContext(ctx, args...)
		return err
	})
}

// inGroups calls fn on [i, i+n) of total items in order: n is auditGroup
// while that many are left, then 1 for each of the rest, as insertAudits'
// statements take them.
func inGroups(total int, fn func(i, n int) error) error {
	for i := 0; i < total; {
		n := auditGroup
		if total-i < auditGroup {
			n = 1
		}
		if err := fn(i, n); err != nil {
			return err
		}
		i += n
	}
	return nil
}

// insertAuditSets writes the sets that are not in audit_sets yet, each
// with its patient rows (migration 0016): a worklist page read again
// costs one lookup here, not a hundred rows.
func (d *sqliteDialect) insertAuditSets(ctx context.Context, tx *tx, sets []auditSet) error {
	if len(sets) == 0 {
		return nil
	}
	exists, insert, patients := tx.tx.StmtContext(ctx, d.setExists), tx.tx.StmtContext(ctx, d.setInsert),
		tx.tx.StmtContext(ctx, d.setPatients)
	for _, set := range sets {
		var one int
		switch err := exists.QueryRowContext(ctx, set.domain, set.id).Scan(&one); {
		case err == nil:
			continue
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		refs := sqlutil.EncodeRefs(set.refs)
		if _, err := insert.ExecContext(ctx, set.domain, set.id, refs); err != nil {
			return err
		}
		if _, err := patients.ExecContext(ctx, set.domain, set.id, refs); err != nil {
			return err
		}
	}
	return nil
}

const (
	insertAuditEvents = `INSERT OR IGNORE INTO audit_events
		(domain, id, recorded, action, interaction, outcome, outcome_desc, agent_id, agent_method,
		 token_id, network_addr, patient_refs, entity_refs, query, correlation_id, request_path, patient_set)
		VALUES `
	insertStagedPatients = `INSERT INTO audit_patients_staged (domain, patient_ref, recorded, audit_id) VALUES `
)

// sqlValues is the VALUES list of rows rows of n placeholders each.
func sqlValues(rows, n int) string {
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", n), ", ") + ")"
	return strings.TrimSuffix(strings.Repeat(row+", ", rows), ", ")
}

// prepareAudits prepares insertAudits' statements on the write pool,
// once the tables exist. (Not at first use: inside a write transaction the
// pool's one connection is taken.)
func (d *sqliteDialect) prepareAudits(ctx context.Context) (err error) {
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&d.events, insertAuditEvents + sqlValues(1, auditEventValues)},
		{&d.eventGroup, insertAuditEvents + sqlValues(auditGroup, auditEventValues) + ` RETURNING domain, id`},
		{&d.staged, insertStagedPatients + sqlValues(1, 4)},
		{&d.stagedGroup, insertStagedPatients + sqlValues(auditGroup, 4)},
		{&d.setExists, `SELECT 1 FROM audit_sets WHERE domain = ? AND set_id = ?`},
		{&d.setInsert, `INSERT INTO audit_sets (domain, set_id, patient_refs) VALUES (?, ?, ?)`},
		{&d.setPatients, `INSERT OR IGNORE INTO audit_set_patients (domain, patient_ref, set_id)
			SELECT ?1, value, ?2 FROM json_each(?3)`},
	} {
		if *p.stmt, err = d.w.PrepareContext(ctx, p.query); err != nil {
			return err
		}
	}
	return nil
}
