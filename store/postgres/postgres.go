// Package postgres implements store.Store on PostgreSQL through
// github.com/jackc/pgx/v5 (pgxpool), the store for several bridge replicas
// sharing one database.
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
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Compile-time check that the Store implements the whole contract.
var _ store.Store = (*Store)(nil)

// Store is a store.Store on a PostgreSQL database. It is safe for
// concurrent use, and several Stores (replicas) may share one database.
type Store struct {
	pool *pgxpool.Pool
}

// Open connects to the PostgreSQL database at url (a postgres:// URL or a
// key=value DSN, with pgxpool's pool_* parameters if wanted) and applies the
// embedded migrations it lacks. Concurrent Opens (replicas starting
// together) are safe: migrations run under a transaction-scoped advisory
// lock. Errors: store.ErrInvalid for an unparsable url; anything else
// (unreachable server, failed migration) is internal.
func Open(ctx context.Context, url string) (_ *Store, err error) {
	defer store.Wrap(&err, "postgres.Open")
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error may quote the URL, password included.
		return nil, store.E(store.KindInvalid, "unparsable PostgreSQL URL")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// migrate applies the embedded migrations the schema lacks in one
// transaction. The advisory lock is keyed by the schema, so replicas
// migrating the same schema queue behind each other (and then find the work
// done) while different schemas, such as parallel tests, do not wait.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := sqlutil.Migrations(migrationFS, "migrations")
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var schema *string
		if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			return err
		}
		if schema == nil {
			return errors.New("no schema of the search_path exists")
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('qubs-fhir-bridge/migrate/' || $1, 0))`,
			*schema); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return err
		}
		versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			return err
		}
		applied := map[int]bool{}
		for _, v := range versions {
			applied[v] = true
		}
		// A version applied here but unknown to this binary comes from a
		// newer release; migrations are additive, so running on is safe
		// during a rolling upgrade.
		for _, m := range ms {
			if applied[m.Version] {
				continue
			}
			// No arguments: pgx sends it with the simple protocol, which
			// allows several statements.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`,
				m.Version, m.Name); err != nil {
				return err
			}
		}
		return nil
	})
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) (err error) {
	defer store.Wrap(&err, "postgres.Ping")
	return s.pool.Ping(ctx)
}

// Close closes the pool, waiting for borrowed connections to come back.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// querier is what both the pool and a transaction offer.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// write runs fn in a transaction and commits it when fn returns nil.
func (s *Store) write(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// read runs fn in a REPEATABLE READ read-only transaction, so that the
// several queries of one read see one snapshot.
func (s *Store) read(ctx context.Context, fn func(q querier) error) error {
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly},
		func(tx pgx.Tx) error { return fn(tx) })
}

// utc normalises a time read back (pgx gives timestamptz in time.Local).
func utc(t time.Time) time.Time { return t.UTC() }

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// notFound turns pgx.ErrNoRows into store.ErrNotFound.
func notFound(err error, what string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return store.E(store.KindNotFound, "no such %s", what)
	}
	return err
}
