// Package sqlstore is the one implementation of store.Store, on
// database/sql: SQLite through modernc.org/sqlite (pure Go, the default,
// one replica) and PostgreSQL through pgx's stdlib driver (several replicas
// sharing one database). Every query is written once, with ? placeholders,
// in the file of its concern (reports.go, deliveries.go, audit.go,
// resources.go); what really differs between the engines is a dialect
// (dialect.go; sqlite.go and postgres.go implement it): placeholders, time
// columns, row locks, JSON arrays, the bulk writes of artifacts and audit
// batches, the migrations and how their runs are serialised.
//
// Opening, pools and engine quirks live beside their dialect: OpenSQLite
// (two pools on one file, WAL, a background checkpointer) and
// OpenPostgres (one pool, search_path from the URL). store/sqlite and
// store/postgres keep the constructors the rest of the bridge calls.
// docs/store.md describes the schema, the queue and how to add a
// migration or a method.
package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// Compile-time check that the Store implements the whole contract.
var _ store.Store = (*Store)(nil)

// Store is a store.Store on a SQL database. It is safe for concurrent use;
// on PostgreSQL several Stores (replicas) may share one database.
type Store struct {
	d dialect
	w *sql.DB // writes (SQLite: one connection whose transactions BEGIN IMMEDIATE)
	r *sql.DB // reads outside write transactions (PostgreSQL: w itself)
	// closers run before the pools close (the SQLite checkpointer).
	closers []func() error
	// wstats counts the worklist rows moved since the planner's
	// statistics were last refreshed.
	wstats worklistStats
	// resources caches the ServiceRequests of index rows.
	resources resourceCache
	// stmts caches the read pool's statements of hot queries.
	stmts stmtCache
	// reserve is ReserveArtifactSpace's memory (chunkreserve.go).
	reserve chunkReserve
}

// open makes the Store of d on its pools and migrates the database.
func open(ctx context.Context, d dialect, w, r *sql.DB) (*Store, error) {
	s := &Store{d: d, w: w, r: r}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// wrap names the operation of a failed call after the engine, as
// "sqlite.Report(...)" or "postgres.Report(...)": operators see which
// database failed. Call it deferred.
func (s *Store) wrap(errp *error, format string, args ...any) {
	store.Wrap(errp, s.d.name()+"."+format, args...)
}

// Ping reports whether the database answers. It uses the read pool so that
// a long write does not make /readyz fail.
func (s *Store) Ping(ctx context.Context) (err error) {
	defer s.wrap(&err, "Ping")
	var one int
	return s.r.QueryRowContext(ctx, `SELECT 1`).Scan(&one)
}

// Close closes the pools, waiting for borrowed connections to come back.
func (s *Store) Close() error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c())
	}
	errs = append(errs, s.stmts.close())
	if s.r != s.w {
		errs = append(errs, s.r.Close())
	}
	errs = append(errs, s.w.Close())
	return errors.Join(errs...)
}

// querier is what both *sql.DB and *sql.Tx offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// q runs queries written with ? placeholders in the dialect's.
type q struct {
	q querier
	d dialect
	// conn is the connection the transaction q runs in holds, for work
	// below database/sql on it (PostgreSQL's COPY and chunk reads); nil
	// outside such a transaction.
	conn *sql.Conn
}

func (c q) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return c.q.ExecContext(ctx, c.d.rebind(query), args...)
}

func (c q) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return c.q.QueryContext(ctx, c.d.rebind(query), args...)
}

func (c q) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return c.q.QueryRowContext(ctx, c.d.rebind(query), args...)
}

// tx is a write transaction; its q holds the connection it runs on, for
// the dialect's driver-level calls (PostgreSQL's COPY) inside it.
type tx struct {
	q
	tx *sql.Tx
	// settled run once the transaction has ended, told whether it
	// committed: for state kept beside the database (artifact
	// files to remove) that must follow its commits and rollbacks.
	settled []func(committed bool)
}

// afterward runs f once the transaction has committed or rolled back.
func (t *tx) afterward(f func(committed bool)) { t.settled = append(t.settled, f) }

// reader is the read pool, outside any transaction.
func (s *Store) reader() q { return q{q: s.r, d: s.d} }

// write runs fn in a write transaction and commits it when fn returns nil.
func (s *Store) write(ctx context.Context, fn func(tx *tx) error) (err error) {
	conn, t, err := beginOnConn(ctx, s.w, nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	wt := &tx{q: q{q: t, d: s.d, conn: conn}, tx: t}
	committed := false
	defer func() {
		if !committed {
			_ = t.Rollback()
		}
		for _, f := range wt.settled {
			f(committed)
		}
	}()
	if err := fn(wt); err != nil {
		return err
	}
	if err := t.Commit(); err != nil {
		return err
	}
	committed = true
	return nil
}

// read runs fn in a read transaction, so that the several queries of one
// read see one snapshot.
func (s *Store) read(ctx context.Context, fn func(q q) error) error {
	t, err := s.r.BeginTx(ctx, s.d.readTx())
	if err != nil {
		return err
	}
	defer func() { _ = t.Rollback() }()
	return fn(q{q: t, d: s.d})
}

// readOnConn is read with the transaction's connection in q.conn, for
// reads below database/sql (readChunks). It costs a read one more step
// of the pool's, so only reads that need the connection take it.
func (s *Store) readOnConn(ctx context.Context, fn func(q q) error) error {
	conn, t, err := beginOnConn(ctx, s.r, s.d.readTx())
	if err != nil {
		return err
	}
	defer conn.Close()
	defer func() { _ = t.Rollback() }()
	return fn(q{q: t, d: s.d, conn: conn})
}

// beginOnConn begins a transaction on a connection of its own from db,
// for driver-level calls on that connection inside it; the caller closes
// the connection after the transaction ends. DB.BeginTx takes another
// connection when the one it got turns out broken; so does this, once.
func beginOnConn(ctx context.Context, db *sql.DB, opts *sql.TxOptions) (*sql.Conn, *sql.Tx, error) {
	for try := 1; ; try++ {
		conn, err := db.Conn(ctx)
		if err != nil {
			return nil, nil, err
		}
		t, err := conn.BeginTx(ctx, opts)
		if err == nil {
			return conn, t, nil
		}
		conn.Close()
		if !errors.Is(err, driver.ErrBadConn) || try > 1 {
			return nil, nil, err
		}
	}
}

// at is a time column as a Scan destination: INTEGER microseconds
// (SQLite) or timestamptz (PostgreSQL) into a UTC time.Time.
type at struct{ p *time.Time }

func (a at) Scan(src any) error {
	t, ok, err := scanTime(src)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("NULL in a NOT NULL time column")
	}
	*a.p = t
	return nil
}

// atPtr is at for a nullable column: NULL is nil.
type atPtr struct{ p **time.Time }

func (a atPtr) Scan(src any) error {
	t, ok, err := scanTime(src)
	if err != nil {
		return err
	}
	*a.p = nil
	if ok {
		*a.p = &t
	}
	return nil
}

func scanTime(src any) (time.Time, bool, error) {
	switch v := src.(type) {
	case nil:
		return time.Time{}, false, nil
	case int64:
		return time.UnixMicro(v).UTC(), true, nil
	case time.Time:
		return v.UTC(), true, nil
	}
	return time.Time{}, false, fmt.Errorf("time column holds a %T", src)
}

// tm is a time argument in the dialect's column type.
func (s *Store) tm(t time.Time) any { return s.d.time(t) }

// tmPtr is tm for an optional time: nil is NULL.
func (s *Store) tmPtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return s.d.time(*t)
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

// changedOne passes on the error of a statement, and answers kind with
// msg when the statement changed no row (oneRow).
func changedOne(res sql.Result, err error, kind store.Kind, msg string) error {
	if err != nil {
		return err
	}
	if ok, err := oneRow(res); err != nil {
		return err
	} else if !ok {
		return store.E(kind, "%s", msg)
	}
	return nil
}
