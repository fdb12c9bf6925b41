package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ReserveArtifactSpace makes room ahead of time for want bytes of
// artifacts, so that storing a report does not have to grow the table its
// bytes go to: when less than half of want is free, it adds free space up
// to want. It returns the bytes of room it added (0 when there was enough,
// when another replica is doing it, or on SQLite, whose artifact bytes go
// to files). It is slow (it writes about a twelfth of its room to the WAL,
// then VACUUMs the table) and meant for a background loop, never a
// request.
//
// On PostgreSQL 15, COPYing a 2 MiB artifact's ~263 chunks into a table
// that must grow took 19 ms on the reference machine, 3 ms into pages a
// VACUUM had freed: the table grows a page at a time, each page a write to
// the file under the relation's extension lock (docs/performance.md). The
// room is made as migration 0018 describes: rows of 800 bytes, one to a
// page under the table's fillfactor of 10, inserted and rolled back, then
// a VACUUM that records the pages as free.
func (s *Store) ReserveArtifactSpace(ctx context.Context, want int64) (added int64, err error) {
	defer s.wrap(&err, "ReserveArtifactSpace(%d)", want)
	if want <= 0 {
		return 0, nil
	}
	pages, err := s.d.reserveChunkPages(ctx, s.w, (want+maxChunkBytes-1)/maxChunkBytes)
	return pages * maxChunkBytes, err
}

// reservePadding is the size of the rows reserveChunkPages inserts: large
// enough that no two share a page at fillfactor 10 (a row longer than
// ~790 bytes plus the fillfactor's reserve exceeds a page, so it goes to a
// nearly empty one), small enough to cost little WAL.
const reservePadding = 800

// reserveChunkPages is ReserveArtifactSpace for PostgreSQL, in pages of
// report_artifact_chunks (a chunk fills one).
func (postgresDialect) reserveChunkPages(ctx context.Context, w *sql.DB, want int64) (int64, error) {
	added, err := padChunkPages(ctx, w, want)
	if err != nil || added <= 0 {
		return 0, err
	}
	// The rolled-back rows' pages hold dead rows until a VACUUM makes
	// them free, and records them in the free space map, where inserts
	// look first. Outside any transaction, as VACUUM must be.
	if _, err := w.ExecContext(ctx, `VACUUM report_artifact_chunks`); err != nil {
		return 0, fmt.Errorf("vacuuming report_artifact_chunks: %w", err)
	}
	return added, nil
}

// padChunkPages adds, when fewer than half of want pages are free, the
// pages up to want, as rows it rolls back, and returns how many the table
// grew by (0: nothing to do, or another replica is at it).
func padChunkPages(ctx context.Context, w *sql.DB, want int64) (added int64, err error) {
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	// Rolled back in every case: the rows are only there to grow the
	// table.
	defer func() { err = errors.Join(err, ignoreDone(tx.Rollback())) }()
	// One replica at a time; the others find the room made.
	var mine bool
	if err := tx.QueryRowContext(ctx,
		`SELECT pg_try_advisory_xact_lock(hashtextextended('qubs-fhir-bridge/chunk-reserve/' || current_schema(), 0))`).Scan(&mine); err != nil || !mine {
		return 0, err
	}
	// Pages in use: a chunk fills one, so the chunks of committed
	// artifacts count them (an upper bound where short tails share
	// pages), read from 0018's partial index, whose rows are those within
	// retention. Chunks deleted by the purge are not counted: PurgeBefore
	// VACUUMs them free. The size is read from the file, not the
	// statistics, and so counts the pages of the last padding even
	// before its VACUUM.
	var pages, used int64
	if err := tx.QueryRowContext(ctx, `SELECT pg_relation_size('report_artifact_chunks') / current_setting('block_size')::bigint,
		(SELECT COALESCE(SUM(chunks), 0) FROM report_artifacts WHERE chunks > 0)`).Scan(&pages, &used); err != nil {
		return 0, fmt.Errorf("measuring report_artifact_chunks: %w", err)
	}
	if pages-used >= want/2 {
		return 0, nil
	}
	// want rows, not want less the free pages: the rows take the free
	// pages the free space map knows of first, and then grow the table.
	// domain '' is no domain's, so the rows meet no real chunk's key.
	if _, err := tx.ExecContext(ctx, `INSERT INTO report_artifact_chunks (domain, report_id, version, idx, seq, data)
		SELECT '', '', 0, 0, g, p.pad FROM generate_series(1, $1::bigint) g,
			(SELECT decode(repeat('00', $2::int), 'hex') AS pad) p`, want, reservePadding); err != nil {
		return 0, fmt.Errorf("growing report_artifact_chunks: %w", err)
	}
	var after int64
	if err := tx.QueryRowContext(ctx, `SELECT pg_relation_size('report_artifact_chunks') / current_setting('block_size')::bigint`).Scan(&after); err != nil {
		return 0, fmt.Errorf("measuring report_artifact_chunks: %w", err)
	}
	return after - pages, nil
}

// ignoreDone drops the error of rolling back a transaction already
// committed or rolled back.
func ignoreDone(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}

// vacuumChunks makes the pages of report_artifact_chunks rows the purge
// deleted free for new chunks now (autovacuum, at its default scale
// factor, would wait for a fifth of a large table to be dead), so that
// reserveChunkPages, which counts them free, is right.
func (postgresDialect) vacuumChunks(ctx context.Context, w *sql.DB) error {
	if _, err := w.ExecContext(ctx, `VACUUM report_artifact_chunks`); err != nil {
		return fmt.Errorf("vacuuming report_artifact_chunks: %w", err)
	}
	return nil
}

// reserveChunkPages does nothing: SQLite keeps artifact bytes in files.
func (*sqliteDialect) reserveChunkPages(context.Context, *sql.DB, int64) (int64, error) {
	return 0, nil
}

// vacuumChunks does nothing: SQLite's report_artifact_chunks stays empty.
func (*sqliteDialect) vacuumChunks(context.Context, *sql.DB) error { return nil }
