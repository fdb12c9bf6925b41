package sqlstore

import (
	"bufio"
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

//go:embed migrations/postgres/*.sql
var postgresMigrations embed.FS

// OpenPostgres connects to the PostgreSQL database at url (a postgres://
// URL or a key=value DSN, with pgxpool's pool_* parameters if wanted: they
// size the pool as they did when the bridge used pgxpool) and applies the
// embedded migrations it lacks. Concurrent Opens (replicas starting
// together) are safe: migrations run under a transaction-scoped advisory
// lock. Errors: store.ErrInvalid for an unparsable url; anything else
// (unreachable server, failed migration) is internal.
//
// Replicas coordinate through row locks only: a new report version locks
// its report's row in reports (so versions are numbered one by one), and
// every change to a QUBS appointment's delivery queue (a new version, a
// claim, RecordUpload, Complete, Retry, Fail) first locks that
// appointment's row in delivery_queues. ClaimDelivery takes the first due
// queue row nobody holds (FOR UPDATE SKIP LOCKED), so claims never wait on
// each other and never hand out one appointment twice. Locks are always
// taken in that order (report, then queue, then versions), so these
// transactions cannot deadlock. Transactions run at READ COMMITTED: each
// statement after a lock sees what the previous holder committed.
//
// Tables live in the first schema of the connection's search_path, which a
// URL can set (postgres://.../db?search_path=bridge); that is how tests
// isolate themselves, and how an operator shares a database.
func OpenPostgres(ctx context.Context, url string) (_ *Store, err error) {
	defer store.Wrap(&err, "postgres.Open")
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error may quote the URL, password included.
		return nil, store.E(store.KindInvalid, "unparsable PostgreSQL URL")
	}
	db := stdlib.OpenDB(*cfg.ConnConfig)
	// pgxpool's sizes and lifetimes, parsed from the same parameters.
	db.SetMaxOpenConns(int(cfg.MaxConns))
	db.SetMaxIdleConns(int(cfg.MaxConns))
	db.SetConnMaxLifetime(cfg.MaxConnLifetime)
	db.SetConnMaxIdleTime(cfg.MaxConnIdleTime)
	s, err := open(ctx, postgresDialect{}, db, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// postgresDialect: $n placeholders, timestamptz, row locks, jsonb, COPY
// for artifacts and unnest for audit batches.
type postgresDialect struct{}

func (postgresDialect) name() string { return "postgres" }

func (postgresDialect) analyze(ctx context.Context, w *sql.DB, tables ...string) error {
	_, err := w.ExecContext(ctx, "ANALYZE "+strings.Join(tables, ", "))
	return err
}
func (postgresDialect) time(t time.Time) any        { return t }
func (postgresDialect) forUpdate() string           { return " FOR UPDATE" }
func (postgresDialect) skipLocked() string          { return " FOR UPDATE SKIP LOCKED" }
func (postgresDialect) migrations() (fs.FS, string) { return postgresMigrations, "migrations/postgres" }

// readTx: REPEATABLE READ, so that the several queries of one read see one
// snapshot.
func (postgresDialect) readTx() *sql.TxOptions {
	return &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
}

// rebind numbers the ? placeholders: $1, $2, ... Queries hold no ? of
// their own (no string literal with one, no jsonb ? operator).
func (postgresDialect) rebind(query string) string {
	n := strings.Count(query, "?")
	if n == 0 {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 2*n)
	i := 0
	for {
		j := strings.IndexByte(query, '?')
		if j < 0 {
			break
		}
		i++
		b.WriteString(query[:j])
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(i))
		query = query[j+1:]
	}
	b.WriteString(query)
	return b.String()
}

func (postgresDialect) jsonElements(expr, alias string) string {
	return "jsonb_array_elements_text(CAST(" + expr + " AS jsonb)) AS " + alias + " (value)"
}

func (postgresDialect) versionTable() string {
	return `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer     PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`
}

// lockMigrations takes an advisory lock keyed by the schema, so replicas
// migrating the same schema queue behind each other (and then find the
// work done) while different schemas, such as parallel tests, do not wait.
func (postgresDialect) lockMigrations(ctx context.Context, tx *tx) error {
	var schema sql.NullString
	if err := tx.queryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return err
	}
	if !schema.Valid {
		return errors.New("no schema of the search_path exists")
	}
	_, err := tx.exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('qubs-fhir-bridge/migrate/' || ?, 0))`, schema.String)
	return err
}

// lockEvents takes the event log's advisory lock, keyed by the schema
// like lockMigrations, until the transaction ends.
func (postgresDialect) lockEvents(ctx context.Context, tx *tx) error {
	_, err := tx.exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('qubs-fhir-bridge/events/' || current_schema(), 0))`)
	return err
}

// insertArtifacts writes the artifacts of a version with two binary
// COPYs: their rows, then their bytes as rows of report_artifact_chunks
// (migration 0015), streamed through a pipe in 64 KiB messages. As a bytea
// parameter, the driver would copy the 2 MiB of a report's PDF twice (the
// encoded parameter, then the Bind message), tripling the memory a report
// costs while it is accepted; the binary format, unlike the text one,
// costs the server no hex to parse; and COPY inserts the chunks in
// batches, WAL records included. COPY is pgx's, below database/sql: it runs
// on the transaction's own connection, inside the transaction.
func (postgresDialect) insertArtifacts(ctx context.Context, tx *tx, r *store.Report, _ []string) error {
	return withPgx(tx.q.conn, func(c *pgx.Conn) error {
		if err := copyIn(ctx, c, `COPY report_artifacts
			(domain, report_id, version, idx, file_name, content_type, size, sha256, binary_id, chunks) FROM STDIN (FORMAT binary)`,
			func(w *copyWriter) { writeArtifactRows(w, r) }); err != nil {
			return err
		}
		return copyIn(ctx, c, `COPY report_artifact_chunks (domain, report_id, version, idx, seq, data) FROM STDIN (FORMAT binary)`,
			func(w *copyWriter) { writeChunkRows(w, r) })
	})
}

// withPgx runs fn with the pgx connection under conn, for calls
// database/sql has no way to make (COPY, raw rows, pipelines).
func withPgx(conn *sql.Conn, fn func(c *pgx.Conn) error) error {
	return conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("driver connection is a %T, not pgx's", dc)
		}
		return fn(c.Conn())
	})
}

// appendChunks reads the chunks with pgx's connection, below
// database/sql: database/sql's rows get each 8 KB chunk as a copy the
// driver makes, 2 MiB of garbage and a fifth of the bridge's CPU per
// 2 MiB read, while the driver's own rows lend each value from its read
// buffer until the next (BenchmarkReportArtifact2MB, docs/performance.md).
// It runs on the transaction's connection, inside the transaction, as
// insertArtifacts does.
func (postgresDialect) appendChunks(ctx context.Context, q q, dst []byte, domain, reportID string, version, idx int) ([]byte, error) {
	if q.conn == nil {
		return dst, errors.New("reading chunks outside a transaction's connection")
	}
	err := withPgx(q.conn, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT data FROM report_artifact_chunks
			WHERE domain = $1 AND report_id = $2 AND version = $3 AND idx = $4 ORDER BY seq`, domain, reportID, version, idx)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			v := rows.RawValues()[0]
			// pgx asks for bytea in binary, where a raw value is the
			// bytes, only in the exec modes that describe a statement
			// first; a URL's default_query_exec_mode=exec or
			// simple_protocol gets text (hex), which Scan decodes.
			if rows.FieldDescriptions()[0].Format != pgx.BinaryFormatCode {
				var b []byte
				if err := rows.Scan(&b); err != nil {
					return err
				}
				v = b
			}
			dst = append(dst, v...)
		}
		return rows.Err()
	})
	return dst, err
}

// chunkSize is how many bytes of an artifact one report_artifact_chunks
// row holds: as many as fit, with the row's key, in one heap tuple of a
// PostgreSQL page (at most 8,160 bytes), since the column is STORAGE
// PLAIN and the table's toast_tuple_target (0019) keeps the key in the
// row too. The key's text columns are bounded by the primary keys' B-tree
// entries (2,700 bytes), so there is always room for thousands.
func chunkSize(r *store.Report) int { return maxChunkBytes - len(r.Domain) - len(r.ID) }

// chunkCount is how many rows writeChunkRows writes for a's bytes; a
// row per started chunk, none for an artifact without bytes (the purge's
// NULL), one empty row for empty bytes, so that they read back empty, not
// absent.
func chunkCount(r *store.Report, a *store.Artifact) int {
	if a.Data == nil {
		return 0
	}
	return max(1, (len(a.Data)+chunkSize(r)-1)/chunkSize(r))
}

// copyIn runs one COPY FROM STDIN in binary format, its rows written by
// rows into a pipe that the driver reads from as the server takes them.
func copyIn(ctx context.Context, c *pgx.Conn, sql string, rows func(*copyWriter)) error {
	pr, pw := io.Pipe()
	go func() {
		w := &copyWriter{bw: bufio.NewWriterSize(pw, 64<<10)}
		w.bw.WriteString("PGCOPY\n\xff\r\n\x00")
		w.be(4, 0) // flags
		w.be(4, 0) // header extension length
		rows(w)
		w.be(2, math.MaxUint16) // -1: end
		pw.CloseWithError(w.bw.Flush())
	}()
	_, err := c.PgConn().CopyFrom(ctx, pr, sql)
	pr.Close() // a writer still at work stops
	return err
}

// copyWriter writes COPY's binary format (PostgreSQL docs, COPY, "Binary
// Format"): a signature, then per row the field count and each field as a
// length and its bytes in the column type's binary form; -1 after the last
// row. Errors stick in bw and come out of its Flush.
type copyWriter struct {
	bw *bufio.Writer
	// b is be's scratch: a local array would escape (bufio may hand
	// the slice to the pipe), an allocation per number written.
	b [8]byte
}

func (w *copyWriter) be(n int, v uint64) {
	binary.BigEndian.PutUint64(w.b[:], v)
	w.bw.Write(w.b[8-n:])
}

// field writes a bytea or text field; nil is NULL.
func (w *copyWriter) field(b []byte) {
	if b == nil {
		w.be(4, math.MaxUint32) // -1: NULL
		return
	}
	w.be(4, uint64(len(b)))
	w.bw.Write(b)
}

func (w *copyWriter) int4(v int) {
	w.be(4, 4)
	w.be(4, uint64(uint32(int32(v))))
}

// writeArtifactRows writes the report_artifacts rows of r's artifacts,
// their bytes left to writeChunkRows.
func writeArtifactRows(w *copyWriter, r *store.Report) {
	for i := range r.Artifacts {
		a := &r.Artifacts[i]
		w.be(2, 10)
		w.field([]byte(r.Domain))
		w.field([]byte(r.ID))
		w.int4(r.Version)
		w.int4(a.Index)
		w.field([]byte(a.FileName))
		w.field([]byte(a.ContentType))
		w.be(4, 8)
		w.be(8, uint64(a.Size))
		w.field([]byte(a.SHA256))
		w.field([]byte(a.BinaryID))
		if n := chunkCount(r, a); n > 0 {
			w.int4(n)
		} else {
			w.field(nil)
		}
	}
}

// writeChunkRows writes the report_artifact_chunks rows of r's artifacts.
func writeChunkRows(w *copyWriter, r *store.Report) {
	size := chunkSize(r)
	domain, id := []byte(r.Domain), []byte(r.ID) // once, not per chunk
	for i := range r.Artifacts {
		a := &r.Artifacts[i]
		for seq := range chunkCount(r, a) {
			w.be(2, 6)
			w.field(domain)
			w.field(id)
			w.int4(r.Version)
			w.int4(a.Index)
			w.int4(seq)
			w.field(a.Data[seq*size : min(len(a.Data), (seq+1)*size)])
		}
	}
}

func (postgresDialect) artifactFiles() *artifactFiles { return nil }

// auditStaging: none; a record naming one patient is found through
// audit_events_patient_set (its WAL records rows, not the pages a commit
// touched, which is what staging saves SQLite).
func (postgresDialect) auditStaging() *auditStaging { return nil }

// lockAuditSets takes the audit sets' advisory lock, keyed by the schema
// like lockEvents, until the transaction ends: shared by audit batches,
// exclusive for the retention purge (PurgeAuditBefore says why). A
// statement of its own, before anything reads audit_sets: a statement's
// snapshot is taken when it starts, so a lock taken inside the statement
// that reads could still see a set the purge deleted.
func (postgresDialect) lockAuditSets(ctx context.Context, tx *tx, exclusive bool) error {
	_, err := tx.exec(ctx, auditSetsLock(exclusive))
	return err
}

func auditSetsLock(exclusive bool) string {
	fn := "pg_advisory_xact_lock_shared"
	if exclusive {
		fn = "pg_advisory_xact_lock"
	}
	return `SELECT ` + fn + `(hashtextextended('qubs-fhir-bridge/audit-sets/' || current_schema(), 0))`
}

// auditStatements are the statements that write a checked batch of
// audit records, in order: the commit's setting, the sets' shared lock
// (lockAuditSets: a statement of its own, before anything reads
// audit_sets), the records' INSERT over column arrays (unnest) and the
// sets' INSERT. Sets are written without first asking which are missing:
// a set already written is one probe of audit_sets' key (ON CONFLICT DO
// NOTHING writes nothing) and, returning no row, gets no patient rows.
//
// A batch of successful reads and searches commits with synchronous_commit
// off: the commit returns once the records are in PostgreSQL's write-ahead
// log buffers, without waiting for them to reach the disk, so that a read
// waiting for its audit record waits for a round trip, not an fsync. A
// crash of the bridge then loses nothing committed; a crash of the
// database server itself can lose the last few hundred milliseconds of
// read records (three times wal_writer_delay at most), never corrupting
// anything. A batch holding a change (create, update, delete) or a failed
// or refused request keeps the server's setting: those records are
// promised durable before their answer is sent, like the report they are
// about.
func auditStatements(batch []*store.AuditRecord) []auditStatement {
	p := planAudits(batch)
	return slices.Concat(p.before, []auditStatement{{insertAuditsSQL, auditArgs(batch, p.ids)}}, p.after)
}

// auditPlan is what a batch's transaction runs around its records'
// insert (auditStatements), however the records are sent: INSERT over
// column arrays, or COPY (copyAudits).
type auditPlan struct {
	before, after []auditStatement
	ids           []string // the records' patient sets; "" is none
}

func planAudits(batch []*store.AuditRecord) auditPlan {
	ids, sets := patientSets(batch)
	p := auditPlan{ids: ids}
	if readsOnly(batch) {
		p.before = append(p.before, auditStatement{sql: `SET LOCAL synchronous_commit = off`})
	}
	if len(sets) > 0 {
		p.before = append(p.before, auditStatement{sql: auditSetsLock(false)})
		p.after = append(p.after, auditStatement{insertAuditSetsSQL, auditSetArgs(sets)})
	}
	return p
}

type auditStatement struct {
	sql  string
	args []any
}

// insertAudits writes the batch inside tx, a report's transaction (the
// audit writer's batches go through recordAudits).
func (postgresDialect) insertAudits(ctx context.Context, tx *tx, batch []*store.AuditRecord) error {
	for _, st := range auditStatements(batch) {
		if _, err := tx.tx.ExecContext(ctx, st.sql, st.args...); err != nil {
			return auditDataError(err)
		}
	}
	return nil
}

// insertAuditsSQL inserts a batch of audit records from column arrays
// (auditArgs).
var insertAuditsSQL = `INSERT INTO audit_events (` + strings.Join(auditColumns, ", ") + `)
	SELECT c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, NULLIF(c17, '')
	FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
		$7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
		$15::text[], $16::text[], $17::text[])
		AS r (c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17)
	ON CONFLICT (domain, id) DO NOTHING`

// auditColumns are audit_events' columns as insertAuditsSQL and
// copyAudits write them: in auditFields' order.
var auditColumns = []string{"domain", "id", "recorded", "action", "interaction", "outcome", "outcome_desc",
	"agent_id", "agent_method", "token_id", "network_addr", "patient_refs", "entity_refs", "query",
	"correlation_id", "request_path", "patient_set"}

// auditFields are a's values in auditColumns' order, with set its
// patient set ("" for none), all text but recorded (the 3rd), left "" for
// the caller to give as a time.
func auditFields(a *store.AuditRecord, set string) [17]string {
	return [...]string{a.Domain, a.ID, "", a.Action, a.Interaction, a.Outcome, a.OutcomeDesc, a.AgentID,
		a.AgentMethod, a.TokenID, a.NetworkAddr, sqlutil.EncodeRefs(a.PatientRefs), sqlutil.EncodeRefs(a.EntityRefs),
		a.Query, a.CorrelationID, a.RequestPath, set}
}

// auditArgs are insertAuditsSQL's arguments: one array per column, text
// except recorded (the 3rd); ids are the records' patient sets.
func auditArgs(batch []*store.AuditRecord, ids []string) []any {
	text := make([][]string, len(auditColumns))
	at := make([]time.Time, 0, len(batch))
	for i, a := range batch {
		at = append(at, a.Recorded)
		for j, v := range auditFields(a, ids[i]) {
			text[j] = append(text[j], v)
		}
	}
	args := make([]any, 0, len(text))
	for i, col := range text {
		if i == 2 {
			args = append(args, at)
			continue
		}
		args = append(args, col)
	}
	return args
}

// insertAuditSetsSQL writes patient sets (auditSetArgs) not written yet
// with their patient rows, taken from the set's own JSON array, so that a
// batch sends a set's references once (a page's set names 100). Those
// of a set written before, or by another replica at the same moment
// (whose commit its key waits for), are skipped: a set's rows are
// written once.
const insertAuditSetsSQL = `WITH ins AS (
		INSERT INTO audit_sets (domain, set_id, patient_refs)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
		ON CONFLICT (domain, set_id) DO NOTHING
		RETURNING domain, set_id, patient_refs)
	INSERT INTO audit_set_patients (domain, patient_ref, set_id)
	SELECT ins.domain, p.ref, ins.set_id
	FROM ins, jsonb_array_elements_text(CAST(ins.patient_refs AS jsonb)) AS p (ref)
	ON CONFLICT DO NOTHING`

// auditSetArgs are insertAuditSetsSQL's arguments for sets, in their
// (domain, id) order, so that two batches never wait for each other in
// a cycle.
func auditSetArgs(sets []auditSet) []any {
	domains, ids, refs := make([]string, len(sets)), make([]string, len(sets)), make([]string, len(sets))
	for i, set := range sets {
		domains[i], ids[i], refs[i] = set.domain, set.id, sqlutil.EncodeRefs(set.refs)
	}
	return []any{domains, ids, refs}
}

// recordAudits writes a batch of the audit writer's in one round trip: a
// pipeline of BEGIN, auditStatements and COMMIT, sent together and
// answered together. On this machine's loopback a round trip costs the
// bridge and PostgreSQL more CPU than these statements do, and a read
// waits for its batch's commit, so the four or five round trips of a
// database/sql transaction were most of a read's audit
// (docs/performance.md, "Reads on PostgreSQL: one round trip a batch").
// The first batch on a connection costs one more, pgx preparing the
// statements.
//
// A statement that fails skips the rest of the pipeline, COMMIT
// included, and leaves the transaction open and failed: the connection
// is then discarded, which ends it (TestPostgresAuditBatchRefused). A
// batch whose answer is lost after its COMMIT was sent may be written
// again: the records' keys make that a no-op (ON CONFLICT DO NOTHING).
func (postgresDialect) recordAudits(ctx context.Context, w *sql.DB, batch []*store.AuditRecord) error {
	conn, err := w.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return withPgx(conn, func(c *pgx.Conn) error {
		if len(batch) >= auditCopyMin {
			err := copyAudits(ctx, c, batch)
			if !isUniqueViolation(err) {
				return leaveNoTransaction(c, auditDataError(err))
			}
			// A record the table has already: a batch written again
			// (the journal's records after a crash, or a commit whose
			// answer was lost). Rolled back and written as the smaller
			// batches are, skipping the records already there.
			if _, err := c.Exec(ctx, `ROLLBACK`); err != nil {
				return errors.Join(err, driver.ErrBadConn)
			}
		}
		sts := slices.Concat([]auditStatement{{sql: `BEGIN`}}, auditStatements(batch), []auditStatement{{sql: `COMMIT`}})
		return leaveNoTransaction(c, auditDataError(sendPipeline(ctx, c, sts)))
	})
}

// leaveNoTransaction drops c, by joining driver.ErrBadConn to err, when a
// failed write left it in its transaction: dropped now, rather than held
// idle in it until the pool hands it out again.
func leaveNoTransaction(c *pgx.Conn, err error) error {
	if err != nil && c.PgConn().TxStatus() != 'I' {
		return errors.Join(err, driver.ErrBadConn)
	}
	return err
}

// auditCopyMin is the smallest batch of audit records written with COPY
// rather than INSERT over column arrays. COPY costs PostgreSQL a third
// less a record (one heap insert for many rows, no per-row executor, no
// speculative insertion for ON CONFLICT) and the bridge a sixth to a
// fifth less (rows encoded straight into the protocol's binary format),
// but two more round trips a batch, and pgx's COPY its goroutines: from
// about 128 records a batch it is cheaper on both sides, under that
// dearer (PostgreSQL's CPU a record, medians: 21.9 µs with INSERT ... ON
// CONFLICT against 14.7 µs with COPY in batches of 256, 18.8 against
// 14.5 in batches of 128; in batches of 64 no gain on the server and a
// third more on the client; docs/performance.md). Batches that large are
// the audit journal's (reads do not wait for commits, and a batch lingers
// for up to 256 records): a replica under load.
const auditCopyMin = 128

// copyAudits writes a batch as auditStatements do, in one transaction and
// in the same order (planAudits), with the records themselves sent by
// COPY. COPY cannot skip a record the table has: a batch holding one
// fails with a unique violation (recordAudits then writes it again with
// INSERT ... ON CONFLICT DO NOTHING), and the transaction is left for the
// caller.
func copyAudits(ctx context.Context, c *pgx.Conn, batch []*store.AuditRecord) error {
	p := planAudits(batch)
	if err := sendPipeline(ctx, c, slices.Concat([]auditStatement{{sql: `BEGIN`}}, p.before)); err != nil {
		return err
	}
	// One row reused from record to record: pgx encodes a row's values
	// before it asks for the next.
	var row [17]any
	rows := pgx.CopyFromSlice(len(batch), func(i int) ([]any, error) {
		for j, v := range auditFields(batch[i], p.ids[i]) {
			row[j] = v
		}
		row[2] = batch[i].Recorded
		if p.ids[i] == "" {
			row[16] = nil // NULL: the record names no patient
		}
		return row[:], nil
	})
	if _, err := c.CopyFrom(ctx, pgx.Identifier{"audit_events"}, auditColumns, rows); err != nil {
		return err
	}
	return sendPipeline(ctx, c, append(p.after, auditStatement{sql: `COMMIT`}))
}

// sendPipeline sends the statements in one round trip (a pgx batch).
func sendPipeline(ctx context.Context, c *pgx.Conn, sts []auditStatement) error {
	b := &pgx.Batch{}
	for _, st := range sts {
		b.Queue(st.sql, st.args...)
	}
	return c.SendBatch(ctx, b).Close()
}

// isUniqueViolation reports whether err is PostgreSQL's unique_violation.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// auditDataError makes a data exception (SQLSTATE class 22) of an audit
// write invalid: a record holds what PostgreSQL refuses (PrepareAudit
// cleans what it knows of), which retrying cannot help; as invalid, the
// audit writer writes its batch one by one and sets only the refused
// record aside. The code alone: the message may quote the data.
func auditDataError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22") {
		return store.E(store.KindInvalid, "PostgreSQL refused an audit record (SQLSTATE %s)", pgErr.Code)
	}
	return err
}

// readsOnly reports whether every record of the batch is a successful read
// or search, the records whose loss in a database crash is bounded rather
// than ruled out (see insertAudits).
func readsOnly(batch []*store.AuditRecord) bool {
	for _, a := range batch {
		if a.Outcome != store.AuditOutcomeSuccess || (a.Action != store.AuditActionRead && a.Action != store.AuditActionExecute) {
			return false
		}
	}
	return true
}
