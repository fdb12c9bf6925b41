package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite/sqlitetest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/storetest"
)

// open is a storetest.Opener: a new database file in the test's temp
// dir, copied from one migrated once (the upgrade tests below migrate
// their own).
func open(t *testing.T) func(ctx context.Context) (store.Store, error) {
	path := sqlitetest.Path(t)
	return func(ctx context.Context) (store.Store, error) { return sqlite.Open(ctx, path) }
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := open(t)(context.Background())
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, s.Close()) })
		return s
	})
}

func TestReplicas(t *testing.T) {
	storetest.RunReplicas(t, open)
}

func TestOpenRefusesUnusablePaths(t *testing.T) {
	for _, path := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro"} {
		t.Run(path, func(t *testing.T) {
			_, err := sqlite.Open(context.Background(), path)
			assert.ErrorIs(t, err, store.ErrInvalid)
		})
	}
}

func TestFileIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := sqlite.Open(context.Background(), path)
	require.NoError(t, err)
	defer s.Close()
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), p)
	}
}

// TestJTICleanup looks into the file: ClaimJTI deletes claims expired for
// longer than the grace period, a bounded batch per call, and keeps the
// others.
func TestJTICleanup(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := sqlite.Open(ctx, path)
	require.NoError(t, err)
	defer s.Close()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	defer db.Close()
	count := func(where string, args ...any) int {
		t.Helper()
		var n int
		require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM jti_claims WHERE `+where, args...).Scan(&n))
		return n
	}

	now := time.Now()
	backlog := sqlutil.JTICleanupBatch + 20
	for i := range backlog {
		_, err := db.ExecContext(ctx, `INSERT INTO jti_claims (issuer, jti, expires_at) VALUES (?, ?, ?)`,
			"client-1", fmt.Sprintf("ancient-%d", i), now.Add(-24*time.Hour).UnixMicro())
		require.NoError(t, err)
	}
	fresh, err := s.ClaimJTI(ctx, "client-1", "recently-expired", now.Add(-time.Minute))
	require.NoError(t, err)
	require.True(t, fresh)
	fresh, err = s.ClaimJTI(ctx, "client-1", "live", now.Add(time.Hour))
	require.NoError(t, err)
	require.True(t, fresh)

	assert.Equal(t, 0, count(`jti LIKE 'ancient-%'`), "two calls delete two batches")
	assert.Equal(t, 1, count(`jti = 'recently-expired'`), "kept within the grace period")
	assert.Equal(t, 1, count(`jti = 'live'`))

	// One call deletes one batch at most.
	for i := range backlog {
		_, err := db.ExecContext(ctx, `INSERT INTO jti_claims (issuer, jti, expires_at) VALUES (?, ?, ?)`,
			"client-2", fmt.Sprintf("ancient-%d", i), now.Add(-24*time.Hour).UnixMicro())
		require.NoError(t, err)
	}
	_, err = s.ClaimJTI(ctx, "client-1", "another", now.Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, backlog-sqlutil.JTICleanupBatch, count(`jti LIKE 'ancient-%'`))
}

// TestUpgradeFrom0001 opens a database that has only the first migration,
// with data in it, as a release before the audit trail left it.
func TestUpgradeFrom0001(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := sqlite.Open(ctx, path)
	require.NoError(t, err)
	require.NoError(t, s.CreateBinary(ctx, &store.Binary{Domain: "acme", ID: "b1", Data: []byte("x")}))
	require.NoError(t, s.Close())

	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	// Every migration of the audit tables goes, so that they apply again
	// in order over 0001.
	for _, q := range []string{`DROP TABLE audit_patients`, `DROP TABLE audit_events`, `DROP TABLE jti_claims`,
		`DROP TABLE audit_sets`, `DROP TABLE audit_set_patients`, `DROP TABLE audit_patients_staged`,
		`DELETE FROM schema_migrations WHERE version IN (2, 6, 8, 16)`} {
		_, err := db.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	require.NoError(t, db.Close())

	s, err = sqlite.Open(ctx, path)
	require.NoError(t, err, "0002 applies over 0001")
	defer s.Close()
	_, err = s.Binary(ctx, "acme", "b1")
	require.NoError(t, err, "data survives")
	require.NoError(t, s.RecordAudit(ctx, &store.AuditRecord{Domain: "acme", Action: "R", Interaction: "read", Outcome: "0"}))
	fresh, err := s.ClaimJTI(ctx, "c", "j", time.Now().Add(time.Hour))
	require.NoError(t, err)
	assert.True(t, fresh)
}

// TestUpgradeTo0003 builds a database with 0001 and 0002 only, holding
// delivery state in the per-report form, and opens it: 0003 moves the
// queue to appointments (storetest.CheckQueueUpgrade describes the data).
func TestUpgradeTo0003(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bridge.db")
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	defer db.Close()
	_, err = db.ExecContext(ctx, `CREATE TABLE schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`)
	require.NoError(t, err)
	for i, name := range []string{"0001_init", "0002_audit"} {
		ddl, err := os.ReadFile(filepath.Join("..", "sqlstore", "migrations", "sqlite", name+".sql"))
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, string(ddl))
		require.NoError(t, err, name)
		_, err = db.ExecContext(ctx, `INSERT INTO schema_migrations VALUES (?, ?, 0)`, i+1, name)
		require.NoError(t, err)
	}

	t0 := time.Date(2025, 1, 10, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) int64 { return t0.Add(d).UnixMicro() }
	for _, r := range []struct {
		id, appt     string
		latest       int
		created, due time.Duration
		leased       any
		owner        any
		until        any
	}{
		{"r1", "X", 2, 0, time.Second, 2, "old-worker", at(10 * time.Minute)},
		{"r2", "X", 1, 2 * time.Second, 2 * time.Second, nil, nil, nil},
		{"r3", "Y", 1, 0, time.Hour, nil, nil, nil},
		{"r4", "Z", 2, 5 * time.Second, 3 * time.Second, nil, nil, nil},
	} {
		_, err := db.ExecContext(ctx, `INSERT INTO reports (domain, id, latest_version, appointment_id, created_at, updated_at,
			queue_due_at, leased_version, lease_owner, lease_until) VALUES ('acme', ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.id, r.latest, r.appt, at(r.created), at(r.created), at(r.due), r.leased, r.owner, r.until)
		require.NoError(t, err)
	}
	for _, v := range []struct {
		id, appt  string
		version   int
		created   time.Duration
		state     string
		attempts  int
		guid      string
		due       time.Duration
		delivered any
	}{
		{"r1", "X", 1, 0, "delivered", 1, "g1", 0, at(0)},
		{"r1", "X", 2, time.Second, "pending", 1, "", time.Second, nil},
		{"r2", "X", 1, 2 * time.Second, "pending", 0, "", 2 * time.Second, nil},
		{"r3", "Y", 1, 0, "pending", 1, "", time.Hour, nil},
		{"r4", "Z", 1, 5 * time.Second, "pending", 0, "", 5 * time.Second, nil},
		{"r4", "Z", 2, 3 * time.Second, "pending", 0, "", 3 * time.Second, nil},
	} {
		_, err := db.ExecContext(ctx, `INSERT INTO report_versions (domain, report_id, version, appointment_id,
			resource, submission, created_at, state, attempts, report_guid, delivered_at, next_attempt_at)
			VALUES ('acme', ?, ?, ?, '{}', '{}', ?, ?, ?, ?, ?, ?)`,
			v.id, v.version, v.appt, at(v.created), v.state, v.attempts, v.guid, v.delivered, at(v.due))
		require.NoError(t, err)
	}

	s, err := sqlite.Open(ctx, path)
	require.NoError(t, err, "0003 applies over 0001 and 0002")
	defer s.Close()
	var legacy int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM reports
		WHERE queue_due_at IS NOT NULL OR leased_version IS NOT NULL OR lease_owner IS NOT NULL OR lease_until IS NOT NULL`).Scan(&legacy))
	assert.Equal(t, 0, legacy, "the per-report queue columns are emptied, so no older release finds work there")
	storetest.CheckQueueUpgrade(t, s, t0)
}

// TestUpgradeFromRelease0006 loads a database made at migration 0006 by the
// release before store/sqlstore (testdata/release-0006.sql, a dump of it)
// and opens it with this code: nothing is applied again, and nothing is
// lost (storetest.CheckRelease0006).
func TestUpgradeFromRelease0006(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bridge.db")
	dump, err := os.ReadFile(filepath.Join("testdata", "release-0006.sql"))
	require.NoError(t, err)
	db, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, string(dump))
	require.NoError(t, err)
	var mode string
	require.NoError(t, db.QueryRowContext(ctx, `PRAGMA journal_mode=WAL`).Scan(&mode))
	require.NoError(t, db.Close())

	s, err := sqlite.Open(ctx, path)
	require.NoError(t, err)
	defer s.Close()
	storetest.CheckRelease0006(t, s)

	db, err = sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE applied_at = 0`).Scan(&n))
	assert.Equal(t, 0, n, "the old release's records are kept")
	known, err := sqlstore.KnownMigrations("sqlite")
	require.NoError(t, err)
	require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version > 6`).Scan(&n))
	assert.Equal(t, known-6, n, "only the migrations newer than the old release are applied")
}
