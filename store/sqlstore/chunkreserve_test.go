package sqlstore_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
)

const mib = 1 << 20

// pages is the size of r's report_artifact_chunks in pages.
func (r rawStore) pages(t *testing.T) int64 {
	t.Helper()
	var n int64
	require.NoError(t, r.db.QueryRow(`SELECT pg_relation_size('report_artifact_chunks') / 8192`).Scan(&n))
	return n
}

// vacuums is how many VACUUMs (not autovacuums) of r's
// report_artifact_chunks have ended.
func (r rawStore) vacuums(t *testing.T) int64 {
	t.Helper()
	var n int64
	require.NoError(t, r.db.QueryRow(`SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'report_artifact_chunks'::regclass`).Scan(&n))
	return n
}

// TestReserveArtifactSpace: the room made ahead of time is where reports'
// chunks go (the table does not grow while it lasts), it is topped up only
// once less than half is left, one replica at a time, and the purge
// VACUUMs the chunks it deleted. SQLite has nothing to do.
func TestReserveArtifactSpace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		r := openRaw(t, true)
		added, err := r.ReserveArtifactSpace(ctx, 8*mib)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, added, int64(8*mib))
		room := r.pages(t)
		assert.InDelta(t, 8*mib/8000, room, 2, "one padding row a page")
		var rows int64
		require.NoError(t, r.db.QueryRow(`SELECT count(*) FROM report_artifact_chunks`).Scan(&rows))
		assert.Zero(t, rows, "the padding is rolled back")

		pdf := pdf2MB()
		require.NoError(t, r.CreateReport(ctx, report2MB("r1", "A1", pdf)))
		assert.Equal(t, room, r.pages(t), "the chunks went into the room made, the table did not grow")
		a, err := r.ReportArtifact(ctx, "acme", "r1", 1, 0)
		require.NoError(t, err)
		assert.Equal(t, pdf, a.Data)

		added, err = r.ReserveArtifactSpace(ctx, 8*mib)
		require.NoError(t, err)
		assert.Zero(t, added, "three quarters left: no top-up")
		assert.Equal(t, 1, sqlstore.ReservePaddings(r.Store))
		require.NoError(t, r.CreateReport(ctx, report2MB("r2", "A2", pdf)))
		require.NoError(t, r.CreateReport(ctx, report2MB("r3", "A3", pdf)))
		assert.Equal(t, room, r.pages(t))
		added, err = r.ReserveArtifactSpace(ctx, 8*mib)
		require.NoError(t, err)
		assert.InDelta(t, 3*263*8000, added, 3*8000, "a quarter left: topped up to 8 MiB free")

		// Delivered and past retention: the purge deletes the chunks and
		// VACUUMs, so that their pages can be used again. (Whether they
		// are at once depends on transactions open elsewhere in the
		// database, which keep deleted rows: parallel tests have some.)
		for _, id := range []string{"r1", "r2", "r3"} {
			r.exec(t, `UPDATE report_versions SET state = 'delivered', created_at = ? WHERE report_id = ?`, time.Now().Add(-48*time.Hour), id)
		}
		vacuums := r.vacuums(t)
		_, err = r.PurgeBefore(ctx, time.Now().Add(-24*time.Hour))
		require.NoError(t, err)
		assert.Equal(t, vacuums+1, r.vacuums(t), "the purge VACUUMed the chunks")
		_, err = r.PurgeBefore(ctx, time.Now().Add(-24*time.Hour))
		require.NoError(t, err)
		assert.Equal(t, vacuums+1, r.vacuums(t), "nothing purged, nothing VACUUMed")

		before := r.pages(t)

		// Replicas at once: one pads, the others find it busy or done.
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := r.ReserveArtifactSpace(ctx, 64*mib)
				assert.NoError(t, err)
			}()
		}
		wg.Wait()
		assert.LessOrEqual(t, r.pages(t)-before, int64(64*mib/8000+1), "not padded twice")
	})
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		r := openRaw(t, false)
		added, err := r.ReserveArtifactSpace(ctx, 8*mib)
		require.NoError(t, err)
		assert.Zero(t, added)
	})
}

// TestReserveArtifactSpaceLargeTable: the room is made, and used, when it
// is under 2 % of the table, where PostgreSQL's VACUUM would by default
// skip the index pass and leave the pages out of the free space map.
func TestReserveArtifactSpaceLargeTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := openRaw(t, true)
	pdf := pdf2MB()
	for i := range 30 {
		require.NoError(t, r.CreateReport(ctx, report2MB("r"+strconv.Itoa(i), "A"+strconv.Itoa(i), pdf)))
	}
	large := r.pages(t)
	require.Greater(t, large, int64(7800))
	added, err := r.ReserveArtifactSpace(ctx, 1*mib)
	require.NoError(t, err)
	require.Positive(t, added)
	assert.Less(t, float64(r.pages(t)-large)/float64(r.pages(t)), 0.02, "the room is under 2 % of the table")
	room := r.pages(t)
	require.NoError(t, r.CreateReport(ctx, report2MB("small", "S", pdf[:900<<10])))
	assert.Equal(t, room, r.pages(t), "the 900 KiB went into the room")
}

// TestReserveArtifactSpaceCountsItsErrors: pages that look free but are
// not (rows rolled back without a VACUUM, as a VACUUM cut short leaves
// them) are noticed when reports grow the table anyway, and made free;
// and a count that takes short rows sharing pages for a page each is
// corrected by the next padding, not padded again and again.
func TestReserveArtifactSpaceCountsItsErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("room that is not there", func(t *testing.T) {
		t.Parallel()
		r := openRaw(t, true)
		_, err := r.ReserveArtifactSpace(ctx, 4*mib)
		require.NoError(t, err)
		// Rows rolled back, never VACUUMed: the file grows, the free
		// space map knows nothing of it.
		r.exec(t, `DO $$ BEGIN INSERT INTO report_artifact_chunks SELECT 'x', 'x', 0, 0, g, decode(repeat('00', 800), 'hex') FROM generate_series(1, 2000) g; RAISE EXCEPTION 'rolled back'; EXCEPTION WHEN raise_exception THEN NULL; END $$`)
		phantom := r.pages(t)
		pdf := pdf2MB()
		for i := range 3 { // beyond the real room: the table grows
			require.NoError(t, r.CreateReport(ctx, report2MB("r"+strconv.Itoa(i), "A"+strconv.Itoa(i), pdf)))
		}
		require.Greater(t, r.pages(t), phantom, "the reports did not find the phantom room")
		_, err = r.ReserveArtifactSpace(ctx, 4*mib)
		require.NoError(t, err)
		assert.Equal(t, 2, sqlstore.ReservePaddings(r.Store), "the growth was noticed")
		grown := r.pages(t)
		for i := 3; i < 9; i++ { // the phantom room, made real, holds them
			require.NoError(t, r.CreateReport(ctx, report2MB("r"+strconv.Itoa(i), "A"+strconv.Itoa(i), pdf)))
		}
		assert.Equal(t, grown, r.pages(t))
	})
	t.Run("short rows", func(t *testing.T) {
		t.Parallel()
		r := openRaw(t, true)
		// 300 artifacts of 100 bytes: 300 chunk rows on a few dozen pages.
		for i := range 300 {
			rep := report2MB("t"+strconv.Itoa(i), "T"+strconv.Itoa(i), make([]byte, 100))
			require.NoError(t, r.CreateReport(ctx, rep))
		}
		for range 3 {
			_, err := r.ReserveArtifactSpace(ctx, 2*mib) // want/2 = 131 pages, fewer than the miscount
			require.NoError(t, err)
		}
		assert.Equal(t, 1, sqlstore.ReservePaddings(r.Store), "padded once, then the count was corrected")
	})
}

var _ store.ArtifactReserver = (*sqlstore.Store)(nil)
