package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ReserveArtifactSpace makes room ahead of time for want bytes of
// artifacts, so that storing a report does not have to grow the table its
// bytes go to: when less than half of want looks free, or the table grew
// since the last call (reports found no room), it adds free space up to
// want. It returns the bytes of room it added (0 when there was enough,
// when another replica is doing it, or on SQLite, whose artifact bytes go
// to files). It is slow (it writes about a ninth of its room to the WAL,
// then VACUUMs the table, index included) and meant for a background loop, never a
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
	pages, err := s.d.reserveChunkPages(ctx, s.w, &s.reserve, (want+maxChunkBytes-1)/maxChunkBytes)
	return pages * maxChunkBytes, err
}

// reservePadding is the size of the rows reserveChunkPages inserts. At
// fillfactor 10 a page keeps 7,372 of its bytes free, so a row too long to
// fit beside that (over ~650 bytes) goes to a nearly empty page: one row a
// page, and as little WAL as such a row can cost.
const reservePadding = 800

// vacuumTimeout bounds a VACUUM of report_artifact_chunks, which runs to
// its end even when the caller is cancelled (a VACUUM cut short leaves
// pages counted as room that inserts cannot find).
const vacuumTimeout = 5 * time.Minute

// chunkReserve is what a Store remembers between ReserveArtifactSpace
// calls (PostgreSQL).
type chunkReserve struct {
	mu sync.Mutex
	// pages is the table's size in pages after the last call; growth
	// beyond it means reports found no room (or another replica made
	// some): the count is then checked by making room.
	pages int64
	// offset corrects the count of free pages (the file's pages less the
	// chunk rows, which takes rows sharing a page for a page each): the
	// free pages the last padding found, less what the count said.
	offset int64
	// paddings counts the paddings done, for tests.
	paddings int
	// owned is set once the bridge's role is known to own the table
	// (VACUUM by another role skips it with a mere warning).
	owned bool
}

// reserveChunkPages is ReserveArtifactSpace for PostgreSQL, in pages of
// report_artifact_chunks (a chunk fills one).
func (postgresDialect) reserveChunkPages(ctx context.Context, w *sql.DB, st *chunkReserve, want int64) (int64, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.owned {
		var owner bool
		if err := w.QueryRowContext(ctx, `SELECT pg_has_role(current_user, relowner, 'USAGE')
			FROM pg_class WHERE oid = 'report_artifact_chunks'::regclass`).Scan(&owner); err != nil {
			return 0, fmt.Errorf("reading report_artifact_chunks' owner: %w", err)
		}
		if !owner {
			return 0, errors.New("the bridge's role does not own report_artifact_chunks, so PostgreSQL would skip its VACUUM; set BRIDGE_ARTIFACT_RESERVE=0, or make the role the table's owner")
		}
		st.owned = true
	}
	grew, padded, err := padChunkPages(ctx, w, st, want)
	if err != nil || !padded {
		return 0, err
	}
	// The rolled-back rows' pages hold dead rows until a VACUUM makes
	// them free, and records them in the free space map, where inserts
	// look first. Run even when the padding found only free pages (it
	// filled them), and to its end.
	if err := vacuumChunkTable(ctx, w); err != nil {
		return 0, err
	}
	return grew, nil
}

// padChunkPages inserts want rows and rolls them back when fewer than half
// of want pages look free or the table grew since the last call, and
// returns by how many pages the table grew and whether it did it (not
// when there was room enough, or another replica is at it). st.pages is
// left at the table's size.
func padChunkPages(ctx context.Context, w *sql.DB, st *chunkReserve, want int64) (grew int64, padded bool, err error) {
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, err
	}
	// Rolled back in every case: the rows are only there to grow the
	// table.
	defer func() { err = errors.Join(err, ignoreDone(tx.Rollback())) }()
	// One replica at a time; the others find the room made.
	var mine bool
	if err := tx.QueryRowContext(ctx,
		`SELECT pg_try_advisory_xact_lock(hashtextextended('qubs-fhir-bridge/chunk-reserve/' || current_schema(), 0))`).Scan(&mine); err != nil || !mine {
		return 0, false, err
	}
	// Pages in use: a chunk fills one, so the chunks of committed
	// artifacts count them (more than the pages where short rows share
	// one: st.offset corrects that), read from 0018's partial index, whose
	// rows are those within retention. Chunks deleted by the purge are not
	// counted: PurgeBefore VACUUMs them free. The size is the file's, and
	// so counts the pages of a padding even before its VACUUM.
	var pages, used int64
	if err := tx.QueryRowContext(ctx, `SELECT pg_relation_size('report_artifact_chunks') / current_setting('block_size')::bigint,
		(SELECT COALESCE(SUM(chunks), 0) FROM report_artifacts WHERE chunks > 0)`).Scan(&pages, &used); err != nil {
		return 0, false, fmt.Errorf("measuring report_artifact_chunks: %w", err)
	}
	grown := st.pages > 0 && pages > st.pages
	st.pages = pages
	if !grown && pages-used+st.offset >= want/2 {
		return 0, false, nil
	}
	// want rows, not want less the free pages: the rows take the free
	// pages the free space map knows of first, and then grow the table,
	// so the table has want free pages after the VACUUM, and how much it
	// grew tells how many were free before.
	// domain '' is no domain's, so the rows meet no real chunk's key.
	if _, err := tx.ExecContext(ctx, `INSERT INTO report_artifact_chunks (domain, report_id, version, idx, seq, data)
		SELECT '', '', 0, 0, g, p.pad FROM generate_series(1, $1::bigint) g,
			(SELECT decode(repeat('00', $2::int), 'hex') AS pad) p`, want, reservePadding); err != nil {
		return 0, false, fmt.Errorf("growing report_artifact_chunks: %w", err)
	}
	var after int64
	if err := tx.QueryRowContext(ctx, `SELECT pg_relation_size('report_artifact_chunks') / current_setting('block_size')::bigint`).Scan(&after); err != nil {
		return 0, false, fmt.Errorf("measuring report_artifact_chunks: %w", err)
	}
	st.pages = after
	st.offset = (want - (after - pages)) - (pages - used)
	st.paddings++
	return after - pages, true, nil
}

// ignoreDone drops the error of rolling back a transaction already
// committed or rolled back.
func ignoreDone(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}

// vacuumChunkTable VACUUMs report_artifact_chunks, outside any transaction
// as VACUUM must be, to its end (vacuumTimeout). INDEX_CLEANUP ON: by
// default PostgreSQL 14 and later skip the index pass, and leave the
// pages of dead rows out of the free space map, when those pages are
// under 2 % of the table, as a padding or a purge's pages soon are.
func vacuumChunkTable(ctx context.Context, w *sql.DB) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), vacuumTimeout)
	defer cancel()
	if _, err := w.ExecContext(ctx, `VACUUM (INDEX_CLEANUP ON) report_artifact_chunks`); err != nil {
		return fmt.Errorf("vacuuming report_artifact_chunks: %w", err)
	}
	return nil
}

// vacuumChunks makes the pages of report_artifact_chunks rows the purge
// deleted free for new chunks now (autovacuum, at its default scale
// factor, would wait for a fifth of a large table to be dead), so that
// reserveChunkPages, which counts them free, is right.
func (postgresDialect) vacuumChunks(ctx context.Context, w *sql.DB) error {
	return vacuumChunkTable(ctx, w)
}

// reserveChunkPages does nothing: SQLite keeps artifact bytes in files.
func (*sqliteDialect) reserveChunkPages(context.Context, *sql.DB, *chunkReserve, int64) (int64, error) {
	return 0, nil
}

// vacuumChunks does nothing: SQLite's report_artifact_chunks stays empty.
func (*sqliteDialect) vacuumChunks(context.Context, *sql.DB) error { return nil }
