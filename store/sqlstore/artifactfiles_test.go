package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// artifactReport is a report with one artifact of data, its Binary bin-<id>.
func artifactReport(id string, data []byte) *store.Report {
	return &store.Report{Domain: "acme", ID: id, AppointmentID: "A-" + id, PatientRef: "Patient/p",
		Resource: []byte(`{}`), Submission: []byte(`{}`),
		Artifacts: []store.Artifact{{FileName: "a.pdf", ContentType: "application/pdf", Data: data, BinaryID: "dra-" + id}}}
}

// openStore opens a SQLite store in a new directory, closed by the test's
// end, and returns it with its path.
func openStore(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := OpenSQLite(context.Background(), path)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s, path
}

// artifactFileNames lists the artifact directory.
func artifactFileNames(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.d.artifactFiles().dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// rowFile is the data and data_file columns of a report's artifact.
func rowFile(t *testing.T, s *Store, id string) (data []byte, file sql.NullString) {
	t.Helper()
	require.NoError(t, s.r.QueryRow(`SELECT data, data_file FROM report_artifacts WHERE domain = 'acme' AND report_id = ?`, id).Scan(&data, &file))
	return data, file
}

// TestArtifactFiles: on SQLite an artifact's bytes are a file beside the
// database, readable by the bridge's user only, named by its row, and
// every way of reading them returns them.
func TestArtifactFiles(t *testing.T) {
	ctx := context.Background()
	s, path := openStore(t)
	pdf := bytes.Repeat([]byte("%PDF-1.7 "), 100_000)
	require.NoError(t, s.CreateReport(ctx, artifactReport("r1", pdf)))

	data, file := rowFile(t, s, "r1")
	assert.Nil(t, data, "the row keeps no bytes")
	require.True(t, file.Valid)
	fi, err := os.Stat(filepath.Join(path+artifactDirSuffix, file.String))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	assert.Equal(t, int64(len(pdf)), fi.Size())

	a, err := s.ReportArtifact(ctx, "acme", "r1", 1, 0)
	require.NoError(t, err)
	assert.Equal(t, pdf, a.Data)
	b, err := s.ArtifactBinary(ctx, "acme", "dra-r1")
	require.NoError(t, err)
	assert.Equal(t, pdf, b.Artifact.Data)
	job, err := s.ClaimDelivery(ctx, "w", time.Minute, time.Now().Add(time.Second), nil)
	require.NoError(t, err)
	require.Len(t, job.Artifacts, 1)
	assert.Equal(t, pdf, job.Artifacts[0].Data)
	r, err := s.Report(ctx, "acme", "r1")
	require.NoError(t, err)
	assert.Nil(t, r.Artifacts[0].Data, "metadata reads leave the file alone")
}

// TestArtifactFileRollback: a write that does not commit leaves no file.
func TestArtifactFileRollback(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	require.NoError(t, s.CreateReport(ctx, artifactReport("r1", []byte("first"))))
	err := s.CreateReport(ctx, artifactReport("r1", []byte("second, refused")))
	require.ErrorIs(t, err, store.ErrConflict)
	names := artifactFileNames(t, s)
	require.Len(t, names, 1, "the refused create's file is gone")
	_, file := rowFile(t, s, "r1")
	assert.Equal(t, file.String, names[0])
}

// TestArtifactFilePurge: a purge removes the files of the versions it
// purges, once committed, and leaves pending ones.
func TestArtifactFilePurge(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	old := time.Now().Add(-48 * time.Hour)
	for _, id := range []string{"done", "pending"} {
		r := artifactReport(id, []byte("bytes of "+id))
		r.CreatedAt = old
		require.NoError(t, s.CreateReport(ctx, r))
	}
	job, err := s.ClaimDelivery(ctx, "w", time.Minute, time.Now(), nil)
	require.NoError(t, err)
	require.NoError(t, s.CompleteDelivery(ctx, "w", job.Domain, job.ID, job.Version, "guid", time.Now()))
	purgedID := job.ID
	keptID := map[string]string{"done": "pending", "pending": "done"}[purgedID]
	_, keptFile := rowFile(t, s, keptID)

	n, err := s.PurgeBefore(ctx, time.Now().Add(-time.Hour))
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	data, file := rowFile(t, s, purgedID)
	assert.Nil(t, data)
	assert.False(t, file.Valid)
	assert.Equal(t, []string{keptFile.String}, artifactFileNames(t, s))
	_, err = s.ReportArtifact(ctx, "acme", keptID, 1, 0)
	require.NoError(t, err)
}

// TestArtifactFileSweep: Open removes files no row names once they are
// older than orphanAge (a crash between a file's write and its commit),
// and never a file a row names or a young one (another process's write
// about to commit).
func TestArtifactFileSweep(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := OpenSQLite(ctx, path)
	require.NoError(t, err)
	require.NoError(t, s.CreateReport(ctx, artifactReport("r1", []byte("kept"))))
	_, named := rowFile(t, s, "r1")
	require.NoError(t, s.Close())

	dir := path + artifactDirSuffix
	oldOrphan, youngOrphan, stranger := "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210", "notes.txt"
	for _, n := range []string{oldOrphan, youngOrphan, stranger} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600))
	}
	long := time.Now().Add(-2 * orphanAge)
	for _, n := range []string{oldOrphan, named.String, stranger} {
		require.NoError(t, os.Chtimes(filepath.Join(dir, n), long, long))
	}

	s, err = OpenSQLite(ctx, path)
	require.NoError(t, err)
	defer s.Close()
	assert.ElementsMatch(t, []string{named.String, youngOrphan, stranger}, artifactFileNames(t, s))
	a, err := s.ReportArtifact(ctx, "acme", "r1", 1, 0)
	require.NoError(t, err)
	assert.Equal(t, []byte("kept"), a.Data)
}

// TestArtifactFileDamaged: a missing or cut file is an error, never an
// artifact served or delivered empty or short.
func TestArtifactFileDamaged(t *testing.T) {
	ctx := context.Background()
	s, path := openStore(t)
	require.NoError(t, s.CreateReport(ctx, artifactReport("cut", []byte("twelve bytes"))))
	require.NoError(t, s.CreateReport(ctx, artifactReport("gone", []byte("whatever"))))
	_, cut := rowFile(t, s, "cut")
	_, gone := rowFile(t, s, "gone")
	require.NoError(t, os.WriteFile(filepath.Join(path+artifactDirSuffix, cut.String), []byte("twelve"), 0o600))
	require.NoError(t, os.Remove(filepath.Join(path+artifactDirSuffix, gone.String)))

	for _, id := range []string{"cut", "gone"} {
		_, err := s.ReportArtifact(ctx, "acme", id, 1, 0)
		assert.Error(t, err, id)
		_, err = s.ArtifactBinary(ctx, "acme", "dra-"+id)
		assert.Error(t, err, id)
	}

	// The queue is not wedged on them: a claim fails both (their bytes
	// will not come back), tells subscribers, and hands out the report
	// behind them.
	require.NoError(t, s.CreateReport(ctx, artifactReport("fine", []byte("intact"))))
	after := lastEventSeq(t, s)
	r, err := s.ClaimDelivery(ctx, "w", time.Minute, time.Now().Add(time.Second), nil)
	require.NoError(t, err)
	assert.Equal(t, "fine", r.ID)
	assert.Equal(t, []byte("intact"), r.Artifacts[0].Data)
	for _, id := range []string{"cut", "gone"} {
		v, err := s.ReportVersion(ctx, "acme", id, 1)
		require.NoError(t, err)
		assert.Equal(t, store.DeliveryFailed, v.Delivery.State, id)
		assert.Equal(t, "artifact 0 cannot be read from the store: the file is missing or damaged", v.Delivery.LastError, id)
	}
	evs, err := s.EventsAfter(ctx, after, 10)
	require.NoError(t, err)
	var failed []string
	for _, e := range evs {
		assert.Equal(t, store.EventFailed, e.Kind)
		failed = append(failed, e.FocusID)
	}
	assert.ElementsMatch(t, []string{"cut", "gone"}, failed)
	_, err = s.ClaimDelivery(ctx, "w", time.Minute, time.Now().Add(time.Second), nil)
	assert.ErrorIs(t, err, store.ErrNotFound, "nothing else is due, and the failures stay committed")
}

func lastEventSeq(t *testing.T, s *Store) int64 {
	t.Helper()
	var seq sql.NullInt64
	require.NoError(t, s.r.QueryRow(`SELECT max(seq) FROM events`).Scan(&seq))
	return seq.Int64
}
