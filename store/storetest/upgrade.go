package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// CheckRelease0006 checks a Store opened on the database in the engine's
// testdata/release-0006.sql: made at migration 0006 by the release before
// store/sqlstore (its own runner and schema_migrations, pgxpool on
// PostgreSQL), holding one of everything. t0 is 2025-03-01T09:00:00.123456Z.
//
//	r1 A1 v1 delivered at t0+3s as report-guid-1, artifact 0 uploaded as att-guid-1 at t0+2s
//	r1 A1 v2 created t0+1h, pending, leased by dead-worker until t0+2h10m
//	r2 A2 v1 created t0+2h, pending
//	both versions of r1 carry r1.pdf as Binary dra-r1-0
//	binary b1, idempotency key k1 -> DiagnosticReport/r1, audit record ae-1
//	about Patient/P1 and Patient/P2, jti-1 of client-1 claimed until 2100
//
// Nothing may be lost, and the store must go on working from there.
func CheckRelease0006(t *testing.T, s store.Store) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Date(2025, 3, 1, 9, 0, 0, 123456000, time.UTC)
	pdf := []byte("%PDF-1.4 old-release artifact\x00\x01\x02")

	r1, err := s.Report(ctx, "acme", "r1")
	require.NoError(t, err)
	assert.Equal(t, 2, r1.Version)
	assert.Equal(t, "final", r1.Status)
	assert.Equal(t, "Patient/P1", r1.PatientRef)
	assert.JSONEq(t, `{"resourceType":"DiagnosticReport","id":"r1","status":"final"}`, string(r1.Resource))
	assert.Equal(t, t0.Add(time.Hour), r1.CreatedAt)
	assert.Equal(t, store.DeliveryPending, r1.Delivery.State)
	assert.Equal(t, "dead-worker", r1.Delivery.LeasedBy)
	require.NotNil(t, r1.Delivery.LeaseUntil)
	assert.Equal(t, t0.Add(2*time.Hour+10*time.Minute), *r1.Delivery.LeaseUntil)
	require.Len(t, r1.Artifacts, 1)
	assert.Equal(t, "dra-r1-0", r1.Artifacts[0].BinaryID)
	assert.Equal(t, int64(len(pdf)), r1.Artifacts[0].Size)

	v1, err := s.ReportVersion(ctx, "acme", "r1", 1)
	require.NoError(t, err)
	assert.Equal(t, store.DeliveryDelivered, v1.Delivery.State)
	assert.Equal(t, "report-guid-1", v1.Delivery.ReportGUID)
	require.NotNil(t, v1.Delivery.DeliveredAt)
	assert.Equal(t, t0.Add(3*time.Second), *v1.Delivery.DeliveredAt)
	require.Len(t, v1.Artifacts, 1)
	assert.Equal(t, "att-guid-1", v1.Artifacts[0].QUBSGUID)
	require.NotNil(t, v1.Artifacts[0].UploadedAt)
	assert.Equal(t, t0.Add(2*time.Second), *v1.Artifacts[0].UploadedAt)

	b, err := s.ArtifactBinary(ctx, "acme", "dra-r1-0")
	require.NoError(t, err)
	assert.Equal(t, 2, b.Version)
	assert.Equal(t, pdf, b.Artifact.Data)

	page, _, err := s.SearchReports(ctx, "acme", store.ReportFilter{})
	require.NoError(t, err)
	var ids []string
	for _, r := range page {
		ids = append(ids, r.ID)
	}
	assert.Equal(t, []string{"r1", "r2"}, ids)

	bin, err := s.Binary(ctx, "acme", "b1")
	require.NoError(t, err)
	assert.Equal(t, []byte("binary bytes"), bin.Data)
	assert.Equal(t, t0, bin.CreatedAt)

	rec, err := s.LookupIdempotency(ctx, "acme", "DiagnosticReport:create", "k1")
	require.NoError(t, err)
	assert.Equal(t, "r1", rec.ResourceID)
	assert.Equal(t, "h1", rec.RequestHash)

	audits, _, err := s.SearchAudit(ctx, "acme", store.AuditFilter{PatientRef: "Patient/P2"})
	require.NoError(t, err)
	require.Len(t, audits, 1)
	assert.Equal(t, "ae-1", audits[0].ID)
	assert.Equal(t, t0, audits[0].Recorded)
	assert.Equal(t, []string{"Patient/P1", "Patient/P2"}, audits[0].PatientRefs)

	fresh, err := s.ClaimJTI(ctx, "client-1", "jti-1", time.Now().Add(time.Hour))
	require.NoError(t, err)
	assert.False(t, fresh, "the claim made before the upgrade still refuses a replay")

	// The queue goes on: r1's lease holds until it expires, r2 is free.
	job, err := s.ClaimDelivery(ctx, "new-worker", time.Minute, t0.Add(2*time.Hour+time.Minute), nil)
	require.NoError(t, err)
	assert.Equal(t, "r2", job.ID)
	require.NoError(t, s.CompleteDelivery(ctx, "new-worker", "acme", "r2", 1, "report-guid-2", t0.Add(2*time.Hour+2*time.Minute)))
	job, err = s.ClaimDelivery(ctx, "new-worker", time.Minute, t0.Add(3*time.Hour), nil)
	require.NoError(t, err)
	assert.Equal(t, "r1", job.ID)
	assert.Equal(t, 2, job.Version)
	assert.Equal(t, 2, job.Delivery.Attempts, "the dead worker's attempt counts")
	assert.Equal(t, pdf, job.Artifacts[0].Data)

	// And new writes land beside the old rows.
	r3 := newReport("acme", "r3", "A3", t0.Add(4*time.Hour))
	require.NoError(t, s.CreateReport(ctx, r3))
	n, err := s.PendingDeliveries(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, n, "r1 v2 (leased) and r3")
}
