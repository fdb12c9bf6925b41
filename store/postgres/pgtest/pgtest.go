// Package pgtest gives tests an isolated PostgreSQL store: each test gets
// its own schema, test_<random>, created on the test server and dropped
// when the test ends, so tests run in parallel and re-run cleanly against
// one database. Stores reach the schema through search_path in their URL,
// as an operator's would.
//
// The server is postgres://postgres@127.0.0.1:5432/test?sslmode=disable
// (the database CI starts, created if missing), or BRIDGE_TEST_POSTGRES_URL.
// An unreachable server fails the test, unless BRIDGE_TEST_POSTGRES=skip,
// which skips it: a store test that silently skipped on CI would prove
// nothing.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
)

// DefaultURL is the test server when BRIDGE_TEST_POSTGRES_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// timeout bounds each administrative step (connect, create, drop, open).
const timeout = 30 * time.Second

// BaseURL returns the test server's URL, or skips t when
// BRIDGE_TEST_POSTGRES=skip.
func BaseURL(t testing.TB) string {
	t.Helper()
	if os.Getenv("BRIDGE_TEST_POSTGRES") == "skip" {
		t.Skip("BRIDGE_TEST_POSTGRES=skip")
	}
	if u := os.Getenv("BRIDGE_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// DSN creates an empty schema for t, registers its drop with t.Cleanup and
// returns a URL that reaches it (any number of Stores may be opened on it,
// as replicas). Its pool is small: parallel tests share the server's
// connection limit.
func DSN(t testing.TB) string {
	t.Helper()
	base := BaseURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	admin, err := connect(ctx, base)
	if err != nil {
		t.Fatalf("PostgreSQL at %s is unreachable (start it or set BRIDGE_TEST_POSTGRES=skip): %v", redact(base), err)
	}
	defer admin.Close(ctx)

	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "test_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("creating schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("dropping %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("dropping %s: %v", schema, err)
		}
	})

	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("BRIDGE_TEST_POSTGRES_URL must be a postgres:// URL")
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("pool_max_conns", "4")
	u.RawQuery = q.Encode()
	return u.String()
}

// Open returns a migrated Store on a fresh schema of its own; t.Cleanup
// closes it and then drops the schema.
func Open(t testing.TB) *sqlstore.Store {
	t.Helper()
	dsn := DSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("opening the test store: %v", err)
	}
	// Registered after the schema's drop, so it runs before it.
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing the test store: %v", err)
		}
	})
	return s
}

// connect connects to raw, first creating its database when the server
// answers that it does not exist (a fresh cluster has only "postgres").
func connect(ctx context.Context, raw string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, raw)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name
		return conn, err
	}
	cfg, err := pgx.ParseConfig(raw)
	if err != nil {
		return nil, err
	}
	db := cfg.Database
	cfg.Database = "postgres"
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	_, err = c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize())
	c.Close(ctx)
	// Parallel tests race to create it: duplicate_database, or the
	// catalog's unique violation when both inserted at once, is success.
	if err != nil && !(errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505")) {
		return nil, err
	}
	return pgx.Connect(ctx, raw)
}

// redact hides the password of a URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
