package sqlstore

import (
	"context"
	"sync"
)

// worklistStats decides when the planner's statistics of the worklist
// tables are stale enough to refresh. A first walk fills an empty index
// with thousands of rows at once; until the engine's own statistics catch
// up (PostgreSQL's autovacuum, minutes later; SQLite never, without
// ANALYZE), the planner takes the index for nearly empty and sorts the
// whole domain for every page (measured: a page of 100 of 10,000 rows,
// 22 ms on PostgreSQL without statistics, under 1 ms with them). So the
// rows that arrived or left since the last refresh are counted, and the
// end of a walk refreshes once they reach a tenth of the index (at least
// worklistStatsMin).
type worklistStats struct {
	mu sync.Mutex
	// debt is rows arrived or left since the last refresh; size the rows
	// on the worklists then (as counted here: a restart starts at 0 and
	// refreshes after its first large walk).
	debt, size int
}

const worklistStatsMin = 500

func (w *worklistStats) moved(arrived, left int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.debt += arrived + left
	w.size += arrived - left
}

// due reports whether a refresh is due, and clears the debt when it is:
// a refresh that fails is not retried until the debt grows again.
func (w *worklistStats) due() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.debt < worklistStatsMin || w.debt*10 < w.size {
		return false
	}
	w.debt = 0
	return true
}

// refreshWorklistStats brings the planner's statistics of the worklist
// tables up to date when enough rows moved. It runs after a walk's
// transaction, outside it, and its failure does not fail the walk (the
// index is right either way; only plans suffer).
func (s *Store) refreshWorklistStats(ctx context.Context) {
	if !s.wstats.due() {
		return
	}
	_ = s.d.analyze(ctx, s.w, "worklist_index", "worklist_tokens", "worklist_content")
}
