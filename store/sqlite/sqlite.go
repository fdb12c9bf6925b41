// Package sqlite implements store.Store on an embedded SQLite database file
// through modernc.org/sqlite (pure Go, no cgo), the bridge's default store
// for a single replica.
//
// SQLite allows one writer at a time. The Store therefore keeps two pools on
// the same file: a write pool of exactly one connection whose transactions
// begin IMMEDIATE (they take the write lock up front, so a transaction that
// read something can never fail to upgrade to writing), and a read pool of a
// few query-only connections that WAL mode lets read while the writer
// writes. Within one process writers queue in the pool instead of spinning
// on SQLITE_BUSY; between processes sharing the file (a second Open, a
// backup tool) busy_timeout makes them wait.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Compile-time check that the Store implements the whole contract.
var _ store.Store = (*Store)(nil)

// readConns is the size of the read pool: enough for a few concurrent FHIR
// reads and searches on a 2-core machine; more buys nothing with SQLite.
const readConns = 4

// busyTimeout is how long a connection waits for another process's lock
// before SQLITE_BUSY. Long, because the alternative is a failed request.
const busyTimeout = 10 * time.Second

// Store is a store.Store on one SQLite file. It is safe for concurrent use.
type Store struct {
	w *sql.DB // one connection, BEGIN IMMEDIATE: all writes
	r *sql.DB // query-only connections: reads outside write transactions
	// ckpt checkpoints the WAL off the write path (checkpoint.go).
	ckpt *checkpointer
	// audit holds RecordAudits' prepared statements (audit.go).
	audit auditStatements
}

// Open opens (creating it if needed) the SQLite database at path and applies
// the embedded migrations that it lacks. path is a file name; ":memory:" is
// refused because the read and write pools must share one database.
// Errors: store.ErrInvalid for an unusable path; anything else is internal.
func Open(ctx context.Context, path string) (_ *Store, err error) {
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
	s := &Store{w: w}
	if err := s.init(ctx); err != nil {
		w.Close()
		return nil, err
	}
	r, err := sql.Open("sqlite", pragmas("_pragma=query_only(1)"))
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(readConns)
	r.SetMaxIdleConns(readConns)
	s.r = r
	c, err := sql.Open("sqlite", pragmas())
	if err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	c.SetMaxOpenConns(1)
	s.ckpt = startCheckpointer(c)
	return s, nil
}

// init switches the file to WAL mode and migrates it.
func (s *Store) init(ctx context.Context) error {
	// WAL is a property of the file, set once; doing it outside the
	// pragma list lets a concurrent Open's lock be waited for like any
	// other (busy_timeout), and lets a failure say what failed.
	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode); err != nil {
		return fmt.Errorf("setting WAL mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, want wal", mode)
	}
	return s.migrate(ctx)
}

// migrate applies the embedded migrations the database lacks, all in one
// IMMEDIATE transaction: a concurrent Open (another process) waits for the
// write lock and then finds them applied.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := sqlutil.Migrations(migrationFS, "migrations")
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_at INTEGER NOT NULL)`); err != nil {
			return err
		}
		applied := map[int]bool{}
		rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return err
			}
			applied[v] = true
		}
		if err := rows.Close(); err != nil {
			return err
		}
		// A version applied here but unknown to this binary comes from a
		// newer release; migrations are additive, so running on is safe
		// during a rolling upgrade.
		for _, m := range ms {
			if applied[m.Version] {
				continue
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.Version, m.Name, us(sqlutil.Now())); err != nil {
				return err
			}
		}
		return nil
	})
}

// Ping reports whether the database answers. It uses the read pool so that
// a long write does not make /readyz fail.
func (s *Store) Ping(ctx context.Context) (err error) {
	defer store.Wrap(&err, "sqlite.Ping")
	var one int
	return s.r.QueryRowContext(ctx, `SELECT 1`).Scan(&one)
}

// Close closes both pools.
func (s *Store) Close() error {
	return errors.Join(s.ckpt.close(), s.r.Close(), s.w.Close())
}

// write runs fn in a write transaction (BEGIN IMMEDIATE, through the
// one-connection write pool) and commits it when fn returns nil.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// read runs fn in a read transaction on the read pool, so that the several
// queries of one read see one snapshot (WAL gives each reader its own).
func (s *Store) read(ctx context.Context, fn func(q querier) error) (err error) {
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	return fn(tx)
}

// querier is what both *sql.DB and *sql.Tx offer, so that readers work
// inside and outside write transactions.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Times are stored as INTEGER microseconds since the epoch, UTC.
func us(t time.Time) int64 { return t.UnixMicro() }

func fromUS(v int64) time.Time { return time.UnixMicro(v).UTC() }

func fromNullUS(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromUS(v.Int64)
	return &t
}

func nullUS(t *time.Time) any {
	if t == nil {
		return nil
	}
	return us(*t)
}

// placeholders returns "?, ?, ?" for n arguments.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// notFound turns sql.ErrNoRows into store.ErrNotFound.
func notFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.E(store.KindNotFound, "no such %s", what)
	}
	return err
}

// oneRow reports whether a statement changed exactly one row: whether an
// INSERT ... ON CONFLICT DO NOTHING inserted, or an UPDATE found its row.
func oneRow(res sql.Result) (bool, error) {
	n, err := res.RowsAffected()
	return n == 1, err
}
