package postgres_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/storetest"
)

// open is a storetest.Opener: a fresh schema per test (see pgtest).
func open(t *testing.T) func(ctx context.Context) (store.Store, error) {
	t.Helper()
	dsn := pgtest.DSN(t)
	return func(ctx context.Context) (store.Store, error) { return postgres.Open(ctx, dsn) }
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return pgtest.Open(t) })
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
	u, err := url.Parse(pgtest.BaseURL(t))
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
	s, db := openWithPool(t)
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
	dsn := pgtest.DSN(t)
	s, err := postgres.Open(ctx, dsn)
	require.NoError(t, err)
	require.NoError(t, s.CreateBinary(ctx, &store.Binary{Domain: "acme", ID: "b1", Data: []byte("x")}))
	require.NoError(t, s.Close())

	db, err := pgxpool.New(ctx, dsn)
	require.NoError(t, err)
	// Every migration of the audit tables goes, so that they apply again
	// in order over 0001.
	_, err = db.Exec(ctx, `DROP TABLE audit_patients, audit_events, jti_claims, audit_sets, audit_set_patients;
		DELETE FROM schema_migrations WHERE version IN (2, 6, 8, 16)`)
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

// TestUpgradeTo0003 builds a schema with 0001 and 0002 only, holding
// delivery state in the per-report form, and opens it: 0003 moves the
// queue to appointments (storetest.CheckQueueUpgrade describes the data).
func TestUpgradeTo0003(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	db, err := pgxpool.New(ctx, dsn)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(ctx, `CREATE TABLE schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
	require.NoError(t, err)
	for i, name := range []string{"0001_init", "0002_audit"} {
		ddl, err := os.ReadFile(filepath.Join("..", "sqlstore", "migrations", "postgres", name+".sql"))
		require.NoError(t, err)
		_, err = db.Exec(ctx, string(ddl))
		require.NoError(t, err, name)
		_, err = db.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, i+1, name)
		require.NoError(t, err)
	}

	t0 := time.Date(2025, 1, 10, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	until := at(10 * time.Minute)
	leasedVersion, owner := 2, "old-worker"
	for _, r := range []struct {
		id, appt     string
		latest       int
		created, due time.Duration
		leased       *int
		owner        *string
		until        *time.Time
	}{
		{"r1", "X", 2, 0, time.Second, &leasedVersion, &owner, &until},
		{"r2", "X", 1, 2 * time.Second, 2 * time.Second, nil, nil, nil},
		{"r3", "Y", 1, 0, time.Hour, nil, nil, nil},
		{"r4", "Z", 2, 5 * time.Second, 3 * time.Second, nil, nil, nil},
	} {
		_, err := db.Exec(ctx, `INSERT INTO reports (domain, id, latest_version, appointment_id, created_at, updated_at,
			queue_due_at, leased_version, lease_owner, lease_until) VALUES ('acme', $1, $2, $3, $4, $4, $5, $6, $7, $8)`,
			r.id, r.latest, r.appt, at(r.created), at(r.due), r.leased, r.owner, r.until)
		require.NoError(t, err)
	}
	delivered := at(0)
	for _, v := range []struct {
		id, appt  string
		version   int
		created   time.Duration
		state     string
		attempts  int
		guid      string
		due       time.Duration
		delivered *time.Time
	}{
		{"r1", "X", 1, 0, "delivered", 1, "g1", 0, &delivered},
		{"r1", "X", 2, time.Second, "pending", 1, "", time.Second, nil},
		{"r2", "X", 1, 2 * time.Second, "pending", 0, "", 2 * time.Second, nil},
		{"r3", "Y", 1, 0, "pending", 1, "", time.Hour, nil},
		{"r4", "Z", 1, 5 * time.Second, "pending", 0, "", 5 * time.Second, nil},
		{"r4", "Z", 2, 3 * time.Second, "pending", 0, "", 3 * time.Second, nil},
	} {
		_, err := db.Exec(ctx, `INSERT INTO report_versions (domain, report_id, version, appointment_id,
			resource, submission, created_at, state, attempts, report_guid, delivered_at, next_attempt_at)
			VALUES ('acme', $1, $2, $3, '{}', '{}', $4, $5, $6, $7, $8, $9)`,
			v.id, v.version, v.appt, at(v.created), v.state, v.attempts, v.guid, v.delivered, at(v.due))
		require.NoError(t, err)
	}

	s, err := postgres.Open(ctx, dsn)
	require.NoError(t, err, "0003 applies over 0001 and 0002")
	defer s.Close()
	var legacy int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM reports
		WHERE queue_due_at IS NOT NULL OR leased_version IS NOT NULL OR lease_owner IS NOT NULL OR lease_until IS NOT NULL`).Scan(&legacy))
	assert.Equal(t, 0, legacy, "the per-report queue columns are emptied, so no older release finds work there")
	storetest.CheckQueueUpgrade(t, s, t0)
}

// TestUpgradeFromRelease0006 loads a schema made at migration 0006 by the
// release before store/sqlstore (testdata/release-0006.sql, a pg_dump of
// it) and opens it with this code: nothing is applied again, and nothing
// is lost (storetest.CheckRelease0006).
func TestUpgradeFromRelease0006(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	dump, err := os.ReadFile(filepath.Join("testdata", "release-0006.sql"))
	require.NoError(t, err)
	db, err := pgxpool.New(ctx, dsn)
	require.NoError(t, err)
	defer db.Close()
	// No arguments: pgx runs the whole dump through the simple protocol.
	_, err = db.Exec(ctx, string(dump))
	require.NoError(t, err)

	s, err := postgres.Open(ctx, dsn)
	require.NoError(t, err)
	defer s.Close()
	storetest.CheckRelease0006(t, s)

	var n int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE version <= 6 AND applied_at = '2026-12-02 09:44:57.652355+00'`).Scan(&n))
	assert.Equal(t, 6, n, "the old release's records are kept")
}
