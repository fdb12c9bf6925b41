package sqlstore

import (
	"context"
	"database/sql"
	"io/fs"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// dialect is what differs between the engines, and nothing else: queries
// are written once, with ? placeholders and SQL both engines accept
// (ON CONFLICT upserts, RETURNING, row values, TRUE/FALSE), and ask the
// dialect only for these.
type dialect interface {
	// name prefixes operation names in errors ("sqlite", "postgres").
	name() string
	// rebind turns the ? placeholders of query into the engine's.
	rebind(query string) string
	// time is t as an argument for a time column (SQLite: INTEGER
	// microseconds; PostgreSQL: timestamptz). Columns read back through
	// at and atPtr, which take both.
	time(t time.Time) any
	// forUpdate ends a SELECT that locks the rows it reads until commit;
	// "" where the write transaction's lock already covers the database.
	forUpdate() string
	// skipLocked is forUpdate for claimers that take other rows rather
	// than wait for locked ones.
	skipLocked() string
	// jsonElements is a FROM item over the elements of a JSON array of
	// strings, expr, with one column, value, under alias.
	jsonElements(expr, alias string) string
	// readTx are the options of read transactions (one snapshot).
	readTx() *sql.TxOptions

	// migrations are the engine's numbered files (migrate.go).
	migrations() (fs.FS, string)
	// versionTable creates schema_migrations if it is missing.
	versionTable() string
	// lockMigrations serialises migration runs of Stores opening one
	// database at once; called first in the migration transaction.
	lockMigrations(ctx context.Context, tx *tx) error

	// analyze refreshes the planner's statistics of tables
	// (worklist_stats.go), through w.
	analyze(ctx context.Context, w *sql.DB, tables ...string) error

	// lockEvents serialises appends to the event log until the
	// transaction ends, so seqs commit in order (events.go); a no-op where
	// write transactions are serial anyway.
	lockEvents(ctx context.Context, tx *tx) error

	// insertArtifacts writes the artifacts of a new version r; files
	// are the names artifactFiles gave their bytes ("" for none), nil
	// where they go into the rows.
	insertArtifacts(ctx context.Context, tx *tx, r *store.Report, files []string) error
	// appendChunks appends the bytes of artifact idx of a version, kept
	// in report_artifact_chunks (PostgreSQL, migration 0015), to dst in
	// order, reading in the transaction q, whose connection q.conn holds.
	appendChunks(ctx context.Context, q q, dst []byte, domain, reportID string, version, idx int) ([]byte, error)
	// insertAudits writes a checked batch of audit records and their
	// new patient sets with their patient rows (migration 0016),
	// skipping records whose (domain, id) exists.
	insertAudits(ctx context.Context, tx *tx, batch []*store.AuditRecord) error
	// auditStaging is where single-patient audit records' patient rows
	// gather before they move into audit_patients (SQLite, migrations
	// 0008 and 0016); nil where such records name their patient as
	// their set (PostgreSQL).
	auditStaging() *auditStaging
	// lockAuditSets keeps audit batches (shared) and the retention purge
	// (exclusive) apart where writes can overlap (PostgreSQL).
	lockAuditSets(ctx context.Context, tx *tx, exclusive bool) error
	// reserveChunkPages makes pages of report_artifact_chunks free ahead
	// of time (ReserveArtifactSpace), returning how many it added;
	// vacuumChunks makes the pages of deleted chunks free now. Both do
	// nothing where the table stays empty (SQLite).
	reserveChunkPages(ctx context.Context, w *sql.DB, st *chunkReserve, want int64) (int64, error)
	vacuumChunks(ctx context.Context, w *sql.DB) error
	// artifactFiles is where artifacts' bytes are kept when not in
	// report_artifacts.data (SQLite, migration 0012); nil where they are
	// (PostgreSQL).
	artifactFiles() *artifactFiles
}
