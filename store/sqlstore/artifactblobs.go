package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// PostgreSQL's artifact blobs (migration 0017): the bytes of a new
// version's artifacts are written by a transaction of their own, on a
// connection of their own, while the version's transaction runs its
// statements beside it; the version's artifact rows name the blobs once
// that transaction has committed.
//
// The blob's transaction commits with synchronous_commit off: its commit
// returns once its WAL records are in PostgreSQL's buffers, not on disk,
// and the WAL writer flushes them in the background while the version's
// transaction runs. This loses nothing that was accepted: PostgreSQL
// writes and flushes its WAL in order, so the version's commit, which
// waits for its own commit record to be flushed (synchronous_commit as
// the server has it) and comes after the blob's commit record in the WAL,
// returns only once every record before it, the blob's included, is on
// disk (and, with synchronous replication, on the standbys). A crash
// before that commit loses the version, never acknowledged, and perhaps
// the blob with it; a blob that survives without a version (a crash, or a
// version refused after its blob was written) is removed at once when the
// version fails, and by sweepBlobs at the next Open otherwise. The
// foreign key from report_artifacts.blob_id makes a sweep that meets a
// blob a version has just named fail rather than delete it.

// blobChunkSize is how many bytes of a blob one artifact_blob_chunks row
// holds: as many as fit, with the row's key (a blob id and a number), in
// one heap tuple of a PostgreSQL page (at most 8,160 bytes), since the
// column is STORAGE PLAIN: one row per page, no TOAST.
const blobChunkSize = 8000 - blobIDLen

// blobIDLen is the length of a blob id: 32 lower-case hex digits, as an
// artifact file's name.
const blobIDLen = 32

// blobWrite is the write of a version's blobs, under way or done.
type blobWrite struct {
	// ids are the blobs' ids by artifact, "" for an artifact without
	// bytes.
	ids  []string
	done chan struct{}
	err  error // once done is closed
}

// startBlobs starts writing the bytes of r's artifacts as blobs and
// returns once the write has its connection. The version's transaction
// must take its own connection only after that: a version holding a
// connection while its blobs wait for one could, with as many versions
// as the pool has connections, wait forever.
func (s *Store) startBlobs(ctx context.Context, r *store.Report) (*blobWrite, error) {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return nil, err
	}
	b := &blobWrite{ids: make([]string, len(r.Artifacts)), done: make(chan struct{})}
	for i, a := range r.Artifacts {
		if a.Data != nil {
			b.ids[i] = newBlobID()
		}
	}
	go func() {
		defer close(b.done)
		defer conn.Close()
		b.err = writeBlobs(ctx, conn, r, b.ids)
	}()
	return b, nil
}

// wait returns the blobs' ids once their transaction has committed.
func (b *blobWrite) wait(ctx context.Context) ([]string, error) {
	select {
	case <-b.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if b.err != nil {
		return nil, fmt.Errorf("writing artifact blobs: %w", b.err)
	}
	return b.ids, nil
}

// writeBlobs writes each artifact's blob row and its chunks (binary COPY,
// as insertArtifacts did in the version's transaction before 0017) in one
// transaction committed with synchronous_commit off.
func writeBlobs(ctx context.Context, conn *sql.Conn, r *store.Report, ids []string) error {
	t, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer t.Rollback() //nolint:errcheck // after Commit, a no-op
	if _, err := t.ExecContext(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
		return err
	}
	var named []string
	for _, id := range ids {
		if id != "" {
			named = append(named, id)
		}
	}
	if _, err := t.ExecContext(ctx, `INSERT INTO artifact_blobs (id) SELECT unnest($1::text[])`, named); err != nil {
		return err
	}
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("driver connection is a %T, not pgx's", dc)
		}
		return copyIn(ctx, c, `COPY artifact_blob_chunks (blob_id, seq, data) FROM STDIN (FORMAT binary)`,
			func(w *copyWriter) { writeBlobChunkRows(w, r, ids) })
	})
	if err != nil {
		return err
	}
	return t.Commit()
}

// writeBlobChunkRows writes the artifact_blob_chunks rows of r's artifacts'
// blobs.
func writeBlobChunkRows(w *copyWriter, r *store.Report, ids []string) {
	for i := range r.Artifacts {
		a := &r.Artifacts[i]
		id := []byte(ids[i])
		for seq := range chunkCount(blobChunkSize, a) {
			w.be(2, 3)
			w.field(id)
			w.int4(seq)
			w.field(a.Data[seq*blobChunkSize : min(len(a.Data), (seq+1)*blobChunkSize)])
		}
	}
}

// dropBlobs deletes the blobs of a version that did not commit, once their
// write has ended; what it cannot delete (the database gone, the bridge
// stopping) is left to sweepBlobs.
func (s *Store) dropBlobs(b *blobWrite) {
	<-b.done
	if b.err != nil {
		return // rolled back: nothing to delete
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.write(ctx, func(tx *tx) error { return deleteBlobs(ctx, tx, b.ids) })
}

// deleteBlobs deletes blobs and their chunks; "" ids are skipped.
func deleteBlobs(ctx context.Context, tx *tx, ids []string) error {
	for _, id := range ids {
		if id == "" {
			continue
		}
		if _, err := tx.exec(ctx, `DELETE FROM artifact_blob_chunks WHERE blob_id = ?`, id); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `DELETE FROM artifact_blobs WHERE id = ?`, id); err != nil {
			return err
		}
	}
	return nil
}

// sweepBlobs deletes the blobs older than orphanAge that no artifact row
// names, and their chunks: left by a crash between a blob's commit and
// its version's, or by a failed version whose dropBlobs could not run.
// The age, by the database's clock, spares the blobs of versions still
// being written (by this process or another replica); the foreign key
// makes a sweep that meets one named meanwhile fail instead of delete it.
func (s *Store) sweepBlobs(ctx context.Context) (removed int, err error) {
	err = s.write(ctx, func(tx *tx) error {
		return tx.queryRow(ctx, `WITH gone AS (
				DELETE FROM artifact_blobs b
				WHERE b.created_at < now() - ? * interval '1 second'
					AND NOT EXISTS (SELECT 1 FROM report_artifacts a WHERE a.blob_id = b.id)
				RETURNING b.id),
			chunks AS (DELETE FROM artifact_blob_chunks c USING gone WHERE c.blob_id = gone.id RETURNING 1)
			SELECT count(*) FROM gone`, orphanAge.Seconds()).Scan(&removed)
	})
	return removed, err
}

// newBlobID is a random blob id, blobIDLen hex digits.
func newBlobID() string {
	var b [blobIDLen / 2]byte
	_, _ = rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}
