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
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
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
	dsn := schemaDSN(t)
	return func(ctx context.Context) (store.Store, error) { return postgres.Open(ctx, dsn) }
}

// schemaDSN creates the schema of one test and returns the URL that reaches
// it.
func schemaDSN(t *testing.T) string {
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
	return u.String()
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

// TestJTICleanup looks into the schema: ClaimJTI deletes claims expired for
// longer than the grace period, a bounded batch per call, and keeps the
// others.
func TestJTICleanup(t *testing.T) {
	ctx := context.Background()
	dsn := schemaDSN(t)
	s, err := postgres.Open(ctx, dsn)
	require.NoError(t, err)
	defer s.Close()
	db, err := pgxpool.New(ctx, dsn)
	require.NoError(t, err)
	defer db.Close()
	count := func(where string) int {
		t.Helper()
		var n int
		require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM jti_claims WHERE `+where).Scan(&n))
		return n
	}
	backlog := sqlutil.JTICleanupBatch + 20
	insertBacklog := func(issuer string) {
		t.Helper()
		_, err := db.Exec(ctx, `INSERT INTO jti_claims (issuer, jti, expires_at)
			SELECT $1, 'ancient-' || i, now() - interval '1 day' FROM generate_series(1, $2) AS i`, issuer, backlog)
		require.NoError(t, err)
	}

	now := time.Now()
	insertBacklog("client-1")
	fresh, err := s.ClaimJTI(ctx, "client-1", "recently-expired", now.Add(-time.Minute))
	require.NoError(t, err)
	require.True(t, fresh)
	fresh, err = s.ClaimJTI(ctx, "client-1", "live", now.Add(time.Hour))
	require.NoError(t, err)
	require.True(t, fresh)

	assert.Equal(t, 0, count(`jti LIKE 'ancient-%'`), "two calls delete two batches")
	assert.Equal(t, 1, count(`jti = 'recently-expired'`), "kept within the grace period")
	assert.Equal(t, 1, count(`jti = 'live'`))

	insertBacklog("client-2")
	_, err = s.ClaimJTI(ctx, "client-1", "another", now.Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, backlog-sqlutil.JTICleanupBatch, count(`jti LIKE 'ancient-%'`), "one call deletes one batch at most")
}

// TestUpgradeFrom0001 opens a schema that has only the first migration,
// with data in it, as a release before the audit trail left it.
func TestUpgradeFrom0001(t *testing.T) {
	ctx := context.Background()
	dsn := schemaDSN(t)
	s, err := postgres.Open(ctx, dsn)
	require.NoError(t, err)
	require.NoError(t, s.CreateBinary(ctx, &store.Binary{Domain: "acme", ID: "b1", Data: []byte("x")}))
	require.NoError(t, s.Close())

	db, err := pgxpool.New(ctx, dsn)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `DROP TABLE audit_patients, audit_events, jti_claims;
		DELETE FROM schema_migrations WHERE version = 2`)
	require.NoError(t, err)
	db.Close()

	s, err = postgres.Open(ctx, dsn)
	require.NoError(t, err, "0002 applies over 0001")
	defer s.Close()
	_, err = s.Binary(ctx, "acme", "b1")
	require.NoError(t, err, "data survives")
	require.NoError(t, s.RecordAudit(ctx, &store.AuditRecord{Domain: "acme", Action: "R", Interaction: "read", Outcome: "0"}))
	fresh, err := s.ClaimJTI(ctx, "c", "j", time.Now().Add(time.Hour))
	require.NoError(t, err)
	assert.True(t, fresh)
}
