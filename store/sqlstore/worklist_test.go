package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// TestWorklistBackfill: a row written before migration 0013 (row_format
// 0, no started range), before sites were spelled as configured (format
// 1) or before 0017's wall-clock ranges (format 2) gets them from the next
// walk that finds it unchanged, with no event and its lastUpdated kept.
func TestWorklistBackfill(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, t.TempDir()+"/wl.db")
	require.NoError(t, err)
	defer s.Close()
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	lo, hi := t0, t0.Add(time.Second)
	row := store.WorklistRow{Domain: "acme", AppointmentID: "A1", ID: "sr1", Digest: "d1", PriorityRank: 9,
		Appointment: []byte(`{}`), Resource: []byte(`{"id":"sr1"}`), StartedStart: &lo, StartedEnd: &hi, Site: "Perth Imaging",
		OccurrenceLocalStart: "2026-03-01T17:00:00", OccurrenceLocalEnd: "2026-03-01T17:00:01"}
	_, err = s.ApplyWorklist(ctx, "acme", "", 0, []store.WorklistRow{row}, t0)
	require.NoError(t, err)
	_, err = s.w.ExecContext(ctx, `UPDATE worklist_index SET row_format = 0, started_start = NULL, started_end = NULL, site = 'perth imaging ',
		occurrence_local_start = NULL, occurrence_local_end = NULL`)
	require.NoError(t, err)
	started := func() []string {
		p, err := s.SearchWorklist(ctx, store.WorklistQuery{Domain: "acme", Count: 10,
			Where: []store.WorklistClause{{{{Field: store.WorklistFieldStartedStart, Op: "=", Value: lo}}}}})
		require.NoError(t, err)
		var ids []string
		for _, r := range p.Rows {
			ids = append(ids, r.ID)
			assert.Equal(t, t0, r.LastUpdated)
		}
		return ids
	}
	require.Empty(t, started())
	evs, err := s.EventsAfter(ctx, 0, 10)
	require.NoError(t, err)

	ch, err := s.ApplyWorklist(ctx, "acme", "", 0, []store.WorklistRow{row}, t0.Add(time.Minute))
	require.NoError(t, err)
	assert.Equal(t, []store.WorklistChange{{AppointmentID: "A1"}}, ch, "unchanged")
	assert.Equal(t, []string{"sr1"}, started())
	after, err := s.EventsAfter(ctx, 0, 10)
	require.NoError(t, err)
	assert.Len(t, after, len(evs), "no event")
	var format int
	var site, local string
	require.NoError(t, s.w.QueryRowContext(ctx, `SELECT row_format, site, occurrence_local_start FROM worklist_index`).Scan(&format, &site, &local))
	assert.Equal(t, store.WorklistRowFormat, format)
	assert.Equal(t, "Perth Imaging", site)
	assert.Equal(t, "2026-03-01T17:00:00", local)
}
