package main

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite/sqlitetest"
)

// runDeliveries runs `deliveries args...` on the store dsn.
func runDeliveries(t *testing.T, dsn string, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	m := &Main{Stdout: &out, Stderr: io.Discard, Getenv: envFrom(map[string]string{"BRIDGE_STORE": dsn}), Ready: make(chan struct{})}
	err := m.Run(context.Background(), append([]string{"deliveries"}, args...))
	return out.String(), exitCode(err)
}

// TestDeliveriesCommand: list, retry and abandon through the command, on a
// real SQLite file and a real PostgreSQL schema; what it prints is ids,
// states, error kinds and times, never the report's content.
func TestDeliveriesCommand(t *testing.T) {
	t.Parallel()
	for name, dsn := range map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return "sqlite:" + sqlitetest.Path(t) },
		"postgres": func(t *testing.T) string { return pgtest.DSN(t) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dsn := dsn(t)
			ctx := context.Background()
			st, err := openStore(ctx, dsn)
			require.NoError(t, err)
			defer st.Close()
			const phi = "PHI-Jane-Citizen"
			for _, id := range []string{"r1", "r2"} {
				require.NoError(t, st.CreateReport(ctx, &store.Report{Domain: "acme", ID: id, AppointmentID: "A-" + id,
					Resource: []byte(`{"text":"` + phi + `"}`), Submission: []byte(`{"reportText":"` + phi + `"}`)}))
			}
			// r1's delivery fails for good.
			job, err := st.ClaimDelivery(ctx, "w", time.Minute, time.Now().Add(time.Second), nil)
			require.NoError(t, err)
			require.NoError(t, st.FailDelivery(ctx, "w", "acme", job.ID, job.Version, "not found: qubs.SubmitReport: not found (HTTP 404)"))
			failedID, otherID := job.ID, map[string]string{"r1": "r2", "r2": "r1"}[job.ID]

			out, code := runDeliveries(t, dsn, "list", "--state", "failed")
			assert.Equal(t, 0, code)
			assert.Contains(t, out, failedID)
			assert.Contains(t, out, "not found")
			assert.NotContains(t, out, otherID+" ")
			assert.NotContains(t, out, phi)

			out, code = runDeliveries(t, dsn, "retry", "acme", otherID)
			assert.Equal(t, 1, code, "a pending version is not failed")
			assert.Contains(t, out, "not failed")
			_, code = runDeliveries(t, dsn, "retry", "acme", "nope")
			assert.Equal(t, 1, code)
			_, code = runDeliveries(t, dsn, "retry", "acme")
			assert.Equal(t, 2, code, "usage")

			out, code = runDeliveries(t, dsn, "abandon", "acme", otherID)
			assert.Equal(t, 0, code, out)
			assert.Contains(t, out, "abandoned")

			out, code = runDeliveries(t, dsn, "retry", "acme", failedID+"/_history/1")
			assert.Equal(t, 0, code, out)
			assert.Contains(t, out, "queued again")
			job, err = st.ClaimDelivery(ctx, "w2", time.Minute, time.Now().Add(2*time.Second), nil)
			require.NoError(t, err)
			assert.Equal(t, failedID, job.ID, "the worker picks it up")
			assert.Equal(t, 2, job.Delivery.Attempts)
			require.NoError(t, st.CompleteDelivery(ctx, "w2", "acme", job.ID, job.Version, "guid", time.Now()))

			out, code = runDeliveries(t, dsn, "list", "--domain", "acme")
			assert.Equal(t, 0, code)
			assert.Contains(t, out, "abandoned")
			assert.Contains(t, out, "delivered")
			out, code = runDeliveries(t, dsn, "retry", "acme", otherID)
			assert.Equal(t, 1, code)
			assert.Contains(t, out, "abandoned")
			_, code = runDeliveries(t, dsn, "list", "--state", "lost")
			assert.Equal(t, 2, code)

			// The abandon and the retry that went through are in the audit
			// trail, as $redeliver is; the refused ones changed nothing.
			recs, _, err := st.SearchAudit(ctx, "acme", store.AuditFilter{Action: store.AuditActionUpdate, OldestFirst: true})
			require.NoError(t, err)
			require.Len(t, recs, 2)
			assert.Equal(t, []string{"DiagnosticReport/" + otherID + "/_history/1"}, recs[0].EntityRefs)
			assert.Equal(t, []string{"DiagnosticReport/" + failedID + "/_history/1"}, recs[1].EntityRefs)
			for _, r := range recs {
				assert.Equal(t, "operation", r.Interaction)
				assert.Equal(t, "cli", r.AgentMethod)
				assert.Contains(t, r.RequestPath, "qubs-fhir-bridge deliveries ")
			}
		})
	}
}
