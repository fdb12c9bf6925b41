package postgres_test

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
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/storetest"
)

// defaultURL is the database CI starts (.ci/run); BRIDGE_TEST_POSTGRES_URL
// overrides it. The tests fail when it is unreachable, unless
// BRIDGE_TEST_POSTGRES=skip: a store suite that silently skips on CI would
// prove nothing.
const defaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func baseURL(t *testing.T) string {
	t.Helper()
	if os.Getenv("BRIDGE_TEST_POSTGRES") == "skip" {
		t.Skip("BRIDGE_TEST_POSTGRES=skip")
	}
	if u := os.Getenv("BRIDGE_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return defaultURL
}

// open is a storetest.Opener: a fresh schema, test_<random>, dropped when
// the test ends, so tests run in parallel and re-run cleanly. Stores reach
// it through search_path in their URL, as an operator would.
func open(t *testing.T) func(ctx context.Context) (store.Store, error) {
	t.Helper()
	base := baseURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := connect(ctx, base)
	require.NoError(t, err, "PostgreSQL at %s is unreachable; start it or set BRIDGE_TEST_POSTGRES=skip", redact(base))
	defer admin.Close(ctx)

	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "test_" + hex.EncodeToString(b)
	_, err = admin.Exec(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("dropping %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
		assert.NoError(t, err)
	})

	u, err := url.Parse(base)
	require.NoError(t, err, "BRIDGE_TEST_POSTGRES_URL must be a postgres:// URL")
	q := u.Query()
	q.Set("search_path", schema)
	// Small pools: parallel tests and other suites share the server's
	// connection limit.
	q.Set("pool_max_conns", "4")
	u.RawQuery = q.Encode()
	dsn := u.String()
	return func(ctx context.Context) (store.Store, error) { return postgres.Open(ctx, dsn) }
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

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := open(t)(context.Background())
		require.NoError(t, err)
		// Registered after the schema's drop, so it runs before it.
		t.Cleanup(func() { assert.NoError(t, s.Close()) })
		return s
	})
}

func TestReplicas(t *testing.T) {
	storetest.RunReplicas(t, open)
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	_, err := postgres.Open(ctx, "postgres://u:secret@[::1")
	require.ErrorIs(t, err, store.ErrInvalid)
	assert.NotContains(t, err.Error(), "secret", "no password in errors")

	// A search_path naming no existing schema has nowhere to put tables.
	u, err := url.Parse(baseURL(t))
	require.NoError(t, err)
	q := u.Query()
	q.Set("search_path", "no_such_schema_here")
	u.RawQuery = q.Encode()
	_, err = postgres.Open(ctx, u.String())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "search_path")
}
