package sqlstore_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReserveArtifactSpace: the room made ahead of time is where reports'
// chunks go (the table does not grow while it lasts), it is topped up only
// once less than half is left, one replica at a time, and the purge's
// VACUUM gives deleted chunks' pages back to it. SQLite has nothing to do.
func TestReserveArtifactSpace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		r := openRaw(t, true)
		pages := func() int64 {
			var n int64
			require.NoError(t, r.db.QueryRow(`SELECT pg_relation_size('report_artifact_chunks') / 8192`).Scan(&n))
			return n
		}
		const mib = 1 << 20
		added, err := r.ReserveArtifactSpace(ctx, 8*mib)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, added, int64(8*mib))
		room := pages()
		assert.InDelta(t, 8*mib/8000, room, 2, "one padding row a page")
		var dead int64
		require.NoError(t, r.db.QueryRow(`SELECT count(*) FROM report_artifact_chunks`).Scan(&dead))
		assert.Zero(t, dead, "the padding is rolled back")

		pdf := pdf2MB()
		require.NoError(t, r.CreateReport(ctx, report2MB("r1", "A1", pdf)))
		assert.Equal(t, room, pages(), "the chunks went into the room made, the table did not grow")
		a, err := r.ReportArtifact(ctx, "acme", "r1", 1, 0)
		require.NoError(t, err)
		assert.Equal(t, pdf, a.Data)

		added, err = r.ReserveArtifactSpace(ctx, 8*mib)
		require.NoError(t, err)
		assert.Zero(t, added, "three quarters left: no top-up")
		require.NoError(t, r.CreateReport(ctx, report2MB("r2", "A2", pdf)))
		require.NoError(t, r.CreateReport(ctx, report2MB("r3", "A3", pdf)))
		assert.Equal(t, room, pages())
		added, err = r.ReserveArtifactSpace(ctx, 8*mib)
		require.NoError(t, err)
		assert.InDelta(t, 3*263*8000, added, 3*8000, "a quarter left: topped up to 8 MiB free")

		// Delivered and past retention: the purge deletes the chunks and
		// VACUUMs, so their pages count free again and are used again.
		for _, id := range []string{"r1", "r2", "r3"} {
			r.exec(t, `UPDATE report_versions SET state = 'delivered', created_at = ? WHERE report_id = ?`, time.Now().Add(-48*time.Hour), id)
		}
		before := pages()
		_, err = r.PurgeBefore(ctx, time.Now().Add(-24*time.Hour))
		require.NoError(t, err)
		for i := range 4 {
			id := "p" + strconv.Itoa(i)
			require.NoError(t, r.CreateReport(ctx, report2MB(id, "B"+strconv.Itoa(i), pdf)))
		}
		assert.Equal(t, before, pages(), "purged chunks' pages reused")

		// Replicas at once: one pads, the others find it done or busy.
		require.NoError(t, r.db.QueryRow(`SELECT pg_relation_size('report_artifact_chunks') / 8192`).Scan(&before))
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
		assert.LessOrEqual(t, pages()-before, int64(64*mib/8000+1), "not padded twice")
	})
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		r := openRaw(t, false)
		added, err := r.ReserveArtifactSpace(ctx, 8<<20)
		require.NoError(t, err)
		assert.Zero(t, added)
	})
}
