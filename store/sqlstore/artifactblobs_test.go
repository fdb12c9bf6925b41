package sqlstore_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
)

// blobReport is a report whose one artifact is n bytes (several chunks).
func blobReport(id string, n int) *store.Report {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i * 31)
	}
	return &store.Report{Domain: "acme", ID: id, AppointmentID: "A-" + id, Resource: []byte(`{}`), Submission: []byte(`{}`),
		CreatedAt: time.Now(), Artifacts: []store.Artifact{
			{FileName: "a.pdf", ContentType: "application/pdf", Data: data, BinaryID: "dra-" + id},
			{FileName: "none.pdf", ContentType: "application/pdf"}, // no bytes, no blob
		}}
}

// blobCounts are the rows of artifact_blobs and artifact_blob_chunks.
func blobCounts(t *testing.T, db *sql.DB) (blobs, chunks int) {
	t.Helper()
	require.NoError(t, db.QueryRow(`SELECT (SELECT count(*) FROM artifact_blobs), (SELECT count(*) FROM artifact_blob_chunks)`).Scan(&blobs, &chunks))
	return blobs, chunks
}

// ageBlobs makes every blob older than the sweep's threshold.
func ageBlobs(t *testing.T, db *sql.DB) {
	t.Helper()
	_, err := db.Exec(`UPDATE artifact_blobs SET created_at = now() - interval '2 hours'`)
	require.NoError(t, err)
}

// orphanBlob opens a store holding report named (its artifact n bytes)
// and the blobs of report lost (m bytes) with no version naming them, as
// a crash between the blobs' commit and the version's leaves them.
func orphanBlob(t *testing.T, named string, n int, lost string, m int) (*sqlstore.Store, *sql.DB, []string) {
	t.Helper()
	ctx := context.Background()
	s := pgtest.Open(t)
	require.NoError(t, s.CreateReport(ctx, blobReport(named, n)))
	ids, err := sqlstore.WriteBlobs(ctx, s, blobReport(lost, m))
	require.NoError(t, err)
	return s, sqlstore.DB(s), ids
}

// TestArtifactBlobCrash: a crash after the blobs' commit (synchronous_commit
// off) and before the version's leaves blobs no row names: the report was
// never accepted, the sweep leaves them while they are young (a version
// may still be coming) and deletes them, chunks included, once old; it
// never deletes a blob a version names, however old.
func TestArtifactBlobCrash(t *testing.T) {
	ctx := context.Background()
	s, db, ids := orphanBlob(t, "kept", 20_000, "lost", 50_000)
	require.Len(t, ids, 2)
	assert.Empty(t, ids[1], "no blob for an artifact without bytes")
	// The process died there: no version names the blob.
	_, err := s.Report(ctx, "acme", "lost")
	assert.ErrorIs(t, err, store.ErrNotFound, "not accepted")
	blobs, chunks := blobCounts(t, db)
	assert.Equal(t, 2, blobs)
	assert.Equal(t, 3+7, chunks, "20,000 and 50,000 bytes in chunks of 7,968")

	n, err := sqlstore.SweepBlobs(ctx, s)
	require.NoError(t, err)
	assert.Zero(t, n, "young: its version may still commit")

	ageBlobs(t, db)
	n, err = sqlstore.SweepBlobs(ctx, s)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	blobs, chunks = blobCounts(t, db)
	assert.Equal(t, 1, blobs, "the named blob stays")
	assert.Equal(t, 3, chunks)
	var named string
	require.NoError(t, db.QueryRow(`SELECT blob_id FROM report_artifacts WHERE report_id = 'kept' AND idx = 0`).Scan(&named))
	assert.NotEqual(t, ids[0], named)
	a, err := s.ReportArtifact(ctx, "acme", "kept", 1, 0)
	require.NoError(t, err)
	assert.Equal(t, blobReport("kept", 20_000).Artifacts[0].Data, a.Data)
}

// TestArtifactBlobRefused: a version refused after its blobs were written
// (a create of an existing id, an update on a stale version) leaves no
// blob behind, without waiting for the sweep.
func TestArtifactBlobRefused(t *testing.T) {
	ctx := context.Background()
	s := pgtest.Open(t)
	db := sqlstore.DB(s)
	require.NoError(t, s.CreateReport(ctx, blobReport("r", 10_000)))
	err := s.CreateReport(ctx, blobReport("r", 10_000))
	require.ErrorIs(t, err, store.ErrConflict)
	err = s.UpdateReport(ctx, blobReport("r", 30_000), 7)
	require.ErrorIs(t, err, store.ErrPrecondition)
	blobs, chunks := blobCounts(t, db)
	assert.Equal(t, 1, blobs)
	assert.Equal(t, 2, chunks)

	require.NoError(t, s.UpdateReport(ctx, blobReport("r", 30_000), 1))
	blobs, _ = blobCounts(t, db)
	assert.Equal(t, 2, blobs)
}

// TestArtifactBlobSweepMeetsNamer: a sweep that meets an old blob being
// named by a version not yet committed waits for it, then fails rather
// than delete it (the foreign key); the version's bytes stay whole.
func TestArtifactBlobSweepMeetsNamer(t *testing.T) {
	ctx := context.Background()
	s, db, ids := orphanBlob(t, "first", 100, "late", 9_000)
	ageBlobs(t, db)

	// The version naming the blob, as insertArtifacts writes it, left open.
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck
	_, err = tx.Exec(`INSERT INTO report_artifacts (domain, report_id, version, idx, file_name, content_type, size, sha256, binary_id, chunks, blob_id)
		SELECT domain, 'first', version, 9, 'late.pdf', content_type, 9000, sha256, 'dra-late', 2, $1
		FROM report_artifacts WHERE report_id = 'first' AND idx = 0`, ids[0])
	require.NoError(t, err)

	swept := make(chan error, 1)
	go func() { _, err := sqlstore.SweepBlobs(ctx, s); swept <- err }()
	waitForLockWait(t, db)
	require.NoError(t, tx.Commit())
	assert.Error(t, <-swept, "the sweep fails on the named blob")
	blobs, chunks := blobCounts(t, db)
	assert.Equal(t, 2, blobs)
	assert.Equal(t, 1+2, chunks)
	a, err := s.ReportArtifact(ctx, "acme", "first", 1, 9)
	require.NoError(t, err)
	assert.Len(t, a.Data, 9000)
}

// waitForLockWait polls until some session of the database waits for a
// lock (the sweep behind the open transaction's row lock).
func waitForLockWait(t *testing.T, db *sql.DB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		require.NoError(t, db.QueryRow(`SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND datname = current_database() AND query LIKE '%artifact_blobs%'`).Scan(&n))
		if n > 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the sweep never waited for the open transaction")
}
