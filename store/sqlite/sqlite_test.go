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
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/storetest"
)

// open is a storetest.Opener: a fresh database file in the test's temp dir.
func open(t *testing.T) func(ctx context.Context) (store.Store, error) {
	path := filepath.Join(t.TempDir(), "bridge.db")
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
	for _, q := range []string{`DROP TABLE audit_patients`, `DROP TABLE audit_events`, `DROP TABLE jti_claims`,
		`DELETE FROM schema_migrations WHERE version = 2`} {
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
