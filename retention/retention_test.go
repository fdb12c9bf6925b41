package retention_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/retention"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite/sqlitetest"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"7d", 7 * 24 * time.Hour, true},
		{"36h", 36 * time.Hour, true},
		{"0d", 0, false},
		{"30m", 0, false},
		{"week", 0, false},
		{"-1d", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			d, err := retention.ParseDuration(tc.in)
			if !tc.ok {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, d)
		})
	}
}

func TestPurgeRemovesOldContentOnly(t *testing.T) {
	ctx := context.Background()
	st := sqlitetest.Open(t)
	now := time.Now().UTC()
	for _, r := range []struct {
		id  string
		age time.Duration
	}{{"old", 8 * 24 * time.Hour}, {"new", time.Hour}} {
		rep := &store.Report{Domain: "acme", ID: r.id, AppointmentID: "A1", Status: "final",
			Resource: []byte(`{"resourceType":"DiagnosticReport"}`), Submission: []byte(`{"reportText":"x"}`), CreatedAt: now.Add(-r.age)}
		require.NoError(t, st.CreateReport(ctx, rep))
		job, err := st.ClaimDelivery(ctx, "w", time.Minute, now, nil)
		require.NoError(t, err)
		require.NoError(t, st.CompleteDelivery(ctx, "w", job.Domain, job.ID, job.Version, "guid-"+r.id, now))
	}
	_, err := st.ClaimDelivery(ctx, "w", time.Minute, now, nil)
	require.True(t, errors.Is(err, store.ErrNotFound))

	n, err := retention.Purge(ctx, st, retention.DefaultKeep, now)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	old, err := st.Report(ctx, "acme", "old")
	require.NoError(t, err)
	assert.True(t, old.Purged)
	assert.Empty(t, old.Resource)
	assert.Equal(t, "guid-old", old.Delivery.ReportGUID, "the skeleton stays")
	fresh, err := st.Report(ctx, "acme", "new")
	require.NoError(t, err)
	assert.False(t, fresh.Purged)
}
