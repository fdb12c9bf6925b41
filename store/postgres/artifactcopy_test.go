package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"runtime"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
)

// TestArtifactCopy: artifacts are written with a binary COPY, their bytes
// streamed in pieces: bytes of every value, odd file names and empty data
// come back as they went in, and the purge still blanks them.
func TestArtifactCopy(t *testing.T) {
	ctx := context.Background()
	s := pgtest.Open(t)
	data := pattern(600<<10+7, 7) // several COPY messages
	name := "a\tb\\c\nd\r.pdf"
	created := time.Now().Add(-48 * time.Hour)
	r := &store.Report{Domain: "acme", ID: "cp", AppointmentID: "A1", Resource: []byte(`{}`), Submission: []byte(`{}`),
		CreatedAt: created, Artifacts: []store.Artifact{
			{FileName: name, ContentType: "application/pdf", Data: data, BinaryID: "dra-cp"},
			{FileName: "empty.pdf", ContentType: "application/pdf", Data: []byte{}},
		}}
	require.NoError(t, s.CreateReport(ctx, r))

	a, err := s.ReportArtifact(ctx, "acme", "cp", 1, 0)
	require.NoError(t, err)
	assert.Equal(t, data, a.Data)
	assert.Equal(t, name, a.FileName)
	assert.Equal(t, "dra-cp", a.BinaryID)
	assert.Equal(t, r.Artifacts[0].SHA256, a.SHA256)
	e, err := s.ReportArtifact(ctx, "acme", "cp", 1, 1)
	require.NoError(t, err)
	assert.NotNil(t, e.Data)
	assert.Empty(t, e.Data)
	job, err := s.ClaimDelivery(ctx, "w", time.Minute, time.Now(), nil)
	require.NoError(t, err)
	assert.Equal(t, data, job.Artifacts[0].Data)
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", "cp", 1, "guid", time.Now()))

	n, err := s.PurgeBefore(ctx, time.Now().Add(-24*time.Hour))
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	b, err := s.ArtifactBinary(ctx, "acme", "dra-cp")
	require.NoError(t, err)
	assert.True(t, b.Purged)
	assert.Nil(t, b.Artifact.Data)
}

// pattern is n bytes that differ from their neighbours (i*step), so that
// a chunk read back in the wrong place or order shows.
func pattern(n, step int) []byte {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i * step)
	}
	return data
}

// openWithPool opens a store in a new schema and a pool on the same
// schema, for looking at its tables; both closed by the test's end.
func openWithPool(t *testing.T) (*sqlstore.Store, *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	s, err := postgres.Open(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	db, err := pgxpool.New(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return s, db
}

// TestArtifactChunks: since migration 0015 an artifact's bytes are rows of
// report_artifact_chunks, none in report_artifacts.data; the purge deletes
// them; a chunk missing makes the artifact an error, never bytes cut short,
// and a claim fails its version rather than deliver it.
func TestArtifactChunks(t *testing.T) {
	ctx := context.Background()
	s, db := openWithPool(t)

	data := pattern(100_000, 13)
	old := time.Now().Add(-48 * time.Hour)
	for i, id := range []string{"cut", "whole"} {
		// cut first in the queue, so that the claim meets it first.
		r := &store.Report{Domain: "acme", ID: id, AppointmentID: "A-" + id, Resource: []byte(`{}`), Submission: []byte(`{}`),
			CreatedAt: old.Add(time.Duration(i) * time.Minute), Artifacts: []store.Artifact{{FileName: "a.pdf", ContentType: "application/pdf", Data: data, BinaryID: "dra-" + id}}}
		require.NoError(t, s.CreateReport(ctx, r))
	}
	var (
		inRow        []byte
		chunks, rows int
	)
	require.NoError(t, db.QueryRow(ctx, `SELECT data, chunks, (SELECT count(*) FROM report_artifact_chunks WHERE report_id = 'whole')
		FROM report_artifacts WHERE report_id = 'whole'`).Scan(&inRow, &chunks, &rows))
	assert.Nil(t, inRow, "no bytes in the row")
	assert.Equal(t, 13, chunks, "100,000 bytes in chunks of under 8,000")
	assert.Equal(t, chunks, rows)

	_, err := db.Exec(ctx, `DELETE FROM report_artifact_chunks WHERE report_id = 'cut' AND seq = 5`)
	require.NoError(t, err)
	_, err = s.ReportArtifact(ctx, "acme", "cut", 1, 0)
	assert.Error(t, err, "a chunk missing")
	_, err = s.ArtifactBinary(ctx, "acme", "dra-cut")
	assert.Error(t, err, "a chunk missing")
	a, err := s.ReportArtifact(ctx, "acme", "whole", 1, 0)
	require.NoError(t, err)
	assert.Equal(t, data, a.Data)
	b, err := s.ArtifactBinary(ctx, "acme", "dra-whole")
	require.NoError(t, err)
	assert.Equal(t, data, b.Artifact.Data)

	// A row whose size is damaged is an error, and the buffer the chunks
	// are read into is not sized by it: reading it allocates about what
	// the chunks hold, not 1 TiB (which, never written, an overcommitting
	// kernel would grant) nor the 64 MiB bound.
	for _, size := range []int64{1 << 40, int64(len(data)) - 1} {
		_, err = db.Exec(ctx, `UPDATE report_artifacts SET size = $1 WHERE report_id = 'whole'`, size)
		require.NoError(t, err)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err = s.ReportArtifact(ctx, "acme", "whole", 1, 0)
		runtime.ReadMemStats(&after)
		assert.ErrorContains(t, err, "its row says", "size %d", size)
		assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(4<<20), "allocated reading 100,000 bytes with size %d", size)
	}
	_, err = db.Exec(ctx, `UPDATE report_artifacts SET size = $1 WHERE report_id = 'whole'`, len(data))
	require.NoError(t, err)

	// Both are due, cut first: it fails, and the whole one is handed out.
	job, err := s.ClaimDelivery(ctx, "w", time.Minute, time.Now(), nil)
	require.NoError(t, err)
	assert.Equal(t, "whole", job.ID)
	assert.Equal(t, data, job.Artifacts[0].Data)
	v, err := s.ReportVersion(ctx, "acme", "cut", 1)
	require.NoError(t, err)
	assert.Equal(t, store.DeliveryFailed, v.Delivery.State)
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", "whole", 1, "guid", time.Now()))

	n, err := s.PurgeBefore(ctx, time.Now().Add(-24*time.Hour))
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM report_artifact_chunks`).Scan(&rows))
	assert.Zero(t, rows, "the purge deletes the chunks")
}

// TestArtifactChunksNotToasted: a chunk row keeps its key in the row
// (migration 0019). Before, PostgreSQL moved every chunk's report_id (a
// "dr-" id of 43 hex bytes, which pglz cannot compress) to the TOAST
// table, a TOAST row and index entry per 8,000 bytes; a long domain,
// which shortens the chunks instead (chunkSize), must fit in the row as
// well. The keys are hex of random bytes, as real ids are: repetitive keys
// would be compressed in the row and never reach the TOAST table.
func TestArtifactChunksNotToasted(t *testing.T) {
	ctx := context.Background()
	s, db := openWithPool(t)
	data := pattern(100_000, 31)
	randomHex := func(n int) string {
		b := make([]byte, (n+1)/2)
		_, _ = rand.Read(b) // never fails
		return hex.EncodeToString(b)[:n]
	}
	for _, domain := range []string{"acme", randomHex(300)} {
		id := "dr-" + randomHex(40)
		r := &store.Report{Domain: domain, ID: id, AppointmentID: "A1", Resource: []byte(`{}`), Submission: []byte(`{}`),
			CreatedAt: time.Now(), Artifacts: []store.Artifact{{FileName: "a.pdf", ContentType: "application/pdf", Data: data, BinaryID: "dra-" + id}}}
		require.NoError(t, s.CreateReport(ctx, r))
		a, err := s.ReportArtifact(ctx, domain, id, 1, 0)
		require.NoError(t, err)
		assert.Equal(t, data, a.Data)
	}
	// pg_column_size of a value kept whole in the row is its length and
	// its header (1 or 4 bytes); compressed or moved out (an external
	// value measures its bytes alone), it is not more than its length.
	var rows, shrunk int
	var toastBytes int64
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*),
		count(*) FILTER (WHERE pg_column_size(report_id) <= octet_length(report_id) OR pg_column_size(domain) <= octet_length(domain)),
		(SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'report_artifact_chunks'::regclass)
		FROM report_artifact_chunks`).Scan(&rows, &shrunk, &toastBytes))
	assert.Equal(t, 13+14, rows, "100,000 bytes in chunks of 7,953 and of 7,657 bytes")
	assert.Zero(t, shrunk, "chunk rows whose key was compressed or moved to TOAST")
	assert.Zero(t, toastBytes, "the chunks' TOAST table is empty")
}

// TestUpgradeTo0015: a schema at 0014 holds an artifact's bytes in
// report_artifacts.data; after 0015 that artifact still reads, is
// delivered and purged as before, and new ones go to chunks beside it.
func TestUpgradeTo0015(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	s, err := postgres.Open(ctx, dsn)
	require.NoError(t, err)
	data := []byte("%PDF-1.4 written at 0014")
	old := time.Now().Add(-48 * time.Hour)
	mk := func(id string) *store.Report {
		return &store.Report{Domain: "acme", ID: id, AppointmentID: "A-" + id, Resource: []byte(`{}`), Submission: []byte(`{}`),
			CreatedAt: old, Artifacts: []store.Artifact{{FileName: "a.pdf", ContentType: "application/pdf", Data: data, BinaryID: "dra-" + id}}}
	}
	require.NoError(t, s.CreateReport(ctx, mk("before")))
	require.NoError(t, s.Close())

	// Back to 0014's layout, the row as 0014 wrote it (bytes in data).
	db, err := pgxpool.New(ctx, dsn)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(ctx, `UPDATE report_artifacts SET data = $1`, data)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `DROP TABLE report_artifact_chunks; ALTER TABLE report_artifacts DROP COLUMN chunks;
		DELETE FROM schema_migrations WHERE version = 15`)
	require.NoError(t, err)

	s, err = postgres.Open(ctx, dsn)
	require.NoError(t, err, "0015 applies over 0014")
	defer s.Close()
	a, err := s.ReportArtifact(ctx, "acme", "before", 1, 0)
	require.NoError(t, err)
	assert.Equal(t, data, a.Data)
	b, err := s.ArtifactBinary(ctx, "acme", "dra-before")
	require.NoError(t, err)
	assert.Equal(t, data, b.Artifact.Data)
	require.NoError(t, s.CreateReport(ctx, mk("after")))
	var inRow []byte
	require.NoError(t, db.QueryRow(ctx, `SELECT data FROM report_artifacts WHERE report_id = 'after'`).Scan(&inRow))
	assert.Nil(t, inRow, "new bytes go to chunks")

	for range 2 {
		job, err := s.ClaimDelivery(ctx, "w", time.Minute, time.Now(), nil)
		require.NoError(t, err)
		assert.Equal(t, data, job.Artifacts[0].Data, job.ID)
		require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", job.ID, 1, "guid-"+job.ID, time.Now()))
	}
	n, err := s.PurgeBefore(ctx, time.Now().Add(-24*time.Hour))
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	var left int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM report_artifacts WHERE data IS NOT NULL OR chunks IS NOT NULL`).Scan(&left))
	assert.Zero(t, left)
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM report_artifact_chunks`).Scan(&left))
	assert.Zero(t, left)
}

// TestArtifactChunksEveryExecMode: the chunks are read below database/sql,
// where what a raw value holds depends on the exec mode a URL may choose
// (default_query_exec_mode, e.g. for PgBouncer): binary bytes where pgx
// describes the statement first, hex text where it does not. Every mode
// must read back the bytes written, through each path that reads them.
func TestArtifactChunksEveryExecMode(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	data := pattern(20_000, 7) // three chunks
	for i, mode := range []string{"cache_statement", "cache_describe", "describe_exec", "exec", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			s, err := postgres.Open(ctx, dsn+"&default_query_exec_mode="+mode)
			require.NoError(t, err)
			defer s.Close()
			id := "r-" + mode
			r := &store.Report{Domain: "acme", ID: id, AppointmentID: "A-" + mode, Resource: []byte(`{}`), Submission: []byte(`{}`),
				CreatedAt: time.Now().Add(time.Duration(i) * time.Minute), Artifacts: []store.Artifact{{FileName: "a.pdf", ContentType: "application/pdf", Data: data, BinaryID: "dra-" + id}}}
			require.NoError(t, s.CreateReport(ctx, r))
			a, err := s.ReportArtifact(ctx, "acme", id, 1, 0)
			require.NoError(t, err)
			assert.Equal(t, data, a.Data, "ReportArtifact")
			b, err := s.ArtifactBinary(ctx, "acme", "dra-"+id)
			require.NoError(t, err)
			assert.Equal(t, data, b.Artifact.Data, "ArtifactBinary")
			job, err := s.ClaimDelivery(ctx, "w", time.Minute, time.Now().Add(time.Hour), nil)
			require.NoError(t, err)
			require.NotNil(t, job)
			assert.Equal(t, id, job.ID)
			assert.Equal(t, data, job.Artifacts[0].Data, "ClaimDelivery")
			require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", id, 1, "guid-"+mode, time.Now()))
		})
	}
}
