package deploytest

import (
	"context"
	"net/url"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
)

// TestPostgresDumpRestore runs the PostgreSQL backup and restore of
// docs/operations.md with the flags it gives: pg_dump of the bridge's
// schema in the custom format while the store is open, the schema lost,
// pg_restore, and the bridge's store opening the result and finding its
// reports and audit trail.
func TestPostgresDumpRestore(t *testing.T) {
	t.Parallel()
	pgDump, err := exec.LookPath("pg_dump")
	if err != nil {
		t.Skip("pg_dump is not installed")
	}
	pgRestore, err := exec.LookPath("pg_restore")
	require.NoError(t, err, "pg_dump without pg_restore")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dsn := pgtest.DSN(t)
	st, err := postgres.Open(ctx, dsn)
	require.NoError(t, err)
	r := &store.Report{
		Domain: "acme", ID: "r-1", AppointmentID: "A1", PatientRef: "Patient/P1", Status: "final",
		Resource:   []byte(`{"resourceType":"DiagnosticReport","id":"r-1"}`),
		Submission: []byte(`{"reportStatus":"final"}`),
		Artifacts:  []store.Artifact{{FileName: "r.pdf", ContentType: "application/pdf", Data: []byte("%PDF-1.7 r-1")}},
	}
	require.NoError(t, st.CreateReport(ctx, r))
	require.NoError(t, st.RecordAudit(ctx, &store.AuditRecord{
		Domain: "acme", Action: store.AuditActionRead, Interaction: "read", Outcome: store.AuditOutcomeSuccess,
		AgentID: "ris-1", PatientRefs: []string{"Patient/P1"}, EntityRefs: []string{"DiagnosticReport/r-1"},
	}))

	// libpq (pg_dump, psql) refuses pgx's search_path parameter: the
	// runbook names the schema with --schema instead.
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	schema := u.Query().Get("search_path")
	q := u.Query()
	q.Del("search_path")
	q.Del("pool_max_conns")
	u.RawQuery = q.Encode()
	libpq := u.String()

	dump := filepath.Join(t.TempDir(), "bridge.dump")
	out, err := exec.CommandContext(ctx, pgDump, "--format=custom", "--no-owner", "--no-privileges",
		"--schema="+schema, "--file="+dump, libpq).CombinedOutput()
	require.NoError(t, err, "pg_dump: %s", out)
	require.NoError(t, st.Close())

	// The loss.
	conn, err := pgx.Connect(ctx, libpq)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	out, err = exec.CommandContext(ctx, pgRestore, "--no-owner", "--no-privileges", "--single-transaction",
		"--exit-on-error", "--dbname="+libpq, dump).CombinedOutput()
	require.NoError(t, err, "pg_restore: %s", out)

	rs, err := postgres.Open(ctx, dsn)
	require.NoError(t, err)
	defer rs.Close()
	got, err := rs.Report(ctx, "acme", "r-1")
	require.NoError(t, err)
	assert.JSONEq(t, string(r.Resource), string(got.Resource))
	a, err := rs.ReportArtifact(ctx, "acme", "r-1", 1, 0)
	require.NoError(t, err)
	assert.Equal(t, "%PDF-1.7 r-1", string(a.Data))
	audit, _, err := rs.SearchAudit(ctx, "acme", store.AuditFilter{PatientRef: "Patient/P1"})
	require.NoError(t, err)
	assert.Len(t, audit, 1)
	// The delivery queue came back too: the version is still due.
	job, err := rs.ClaimDelivery(ctx, "w", time.Minute, time.Now().Add(time.Hour), nil)
	require.NoError(t, err)
	assert.Equal(t, "r-1", job.ID)
}
