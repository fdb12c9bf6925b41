package server_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auditjournal"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// heldAudit is a real store whose RecordAudits, the audit writer's only
// way in, waits until release is closed.
type heldAudit struct {
	store.Store
	release chan struct{}
	calls   atomic.Int64
}

func (h *heldAudit) RecordAudits(ctx context.Context, batch []*store.AuditRecord) error {
	h.calls.Add(1)
	select {
	case <-h.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return h.Store.RecordAudits(ctx, batch)
}

// auditOf returns the stored audit records of a correlation id.
func auditOf(t *testing.T, st store.Store, cid string) []*store.AuditRecord {
	t.Helper()
	var out []*store.AuditRecord
	after := ""
	for {
		page, next, err := st.SearchAudit(context.Background(), "acme", store.AuditFilter{Limit: store.MaxSearchLimit, After: after})
		require.NoError(t, err)
		for _, r := range page {
			if r.CorrelationID == cid {
				out = append(out, r)
			}
		}
		if next == "" {
			return out
		}
		after = next
	}
}

// TestReportWriteAuditedInItsTransaction: a report's create and update
// store their audit record in the report's own transaction, so the answer
// needs no commit of the audit writer (held here, it never commits before
// the answers), and the record is there once, not again through the
// writer. A write that fails is recorded by the writer, as before.
func TestReportWriteAuditedInItsTransaction(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		store func(testing.TB) envOption
	}{{"sqlite", withStore}, {"postgres", withPostgres}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			held := &heldAudit{release: make(chan struct{})}
			e := newEnv(t, tc.store(t), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
				held.Store = sc.Store
				sc.Store = held
				sc.Kick = func() {} // no delivery: only the requests write
			})
			_, srID := firstPending(t, e.sim, 20)
			post := func(method, path, cid string, body []byte) *response {
				h := http.Header{"Content-Type": {"application/fhir+json"}, server.HeaderCorrelationID: {cid}}
				return do(t, method, e.base+path, h, bytes.NewReader(body))
			}

			r := post(http.MethodPost, "/DiagnosticReport", "create-1", report{srID: srID, status: "preliminary", text: "Preliminary"}.json())
			require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
			id := r.json(t)["id"].(string)
			got := auditOf(t, held.Store, "create-1")
			require.Len(t, got, 1, "stored with the report, before the answer")
			assert.Equal(t, store.AuditActionCreate, got[0].Action)
			assert.Equal(t, []string{"DiagnosticReport/" + id}, got[0].EntityRefs)
			assert.Len(t, got[0].PatientRefs, 1)

			r = post(http.MethodPut, "/DiagnosticReport/"+id, "update-1", report{srID: srID, status: "final", text: "Final", id: id}.json())
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			got = auditOf(t, held.Store, "update-1")
			require.Len(t, got, 1)
			assert.Equal(t, store.AuditActionUpdate, got[0].Action)
			assert.Zero(t, held.calls.Load(), "nothing went through the audit writer")

			close(held.release)
			r = post(http.MethodPost, "/DiagnosticReport", "refused-1", []byte(`{"resourceType":"DiagnosticReport","status":"final"}`))
			require.Equal(t, http.StatusBadRequest, r.status, "%s", r.body)
			require.NoError(t, e.bridge.Close(context.Background()))
			assert.Len(t, auditOf(t, held.Store, "refused-1"), 1, "a failed write goes through the writer")
			assert.Len(t, auditOf(t, held.Store, "create-1"), 1, "written once")
			assert.Len(t, auditOf(t, held.Store, "update-1"), 1, "written once")
		})
	}
}

// TestReadsWaitForTheJournal: with an audit journal, a read is answered
// once its record is journaled, while the store has not committed it
// (held here); a read whose record the journal cannot take (its directory
// is gone) waits for the commit instead, so no answer goes out with its
// record in memory only. PostgreSQL's setting (without the journal, its
// reads would wait for commits).
func TestReadsWaitForTheJournal(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "journal")
	j, err := auditjournal.Open(dir, auditjournal.Options{SegmentSize: 1}) // a segment a record
	require.NoError(t, err)
	held := &heldAudit{release: make(chan struct{})}
	e := newEnv(t, withPostgres(t), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		held.Store = sc.Store
		sc.Store = held
		sc.Kick = func() {}
		sc.AuditJournal = j
	})
	_, srID := firstPending(t, e.sim, 20)
	read := func(cid string) <-chan *response {
		out := make(chan *response, 1)
		go func() {
			out <- do(t, http.MethodGet, e.base+"/ServiceRequest/"+srID, http.Header{server.HeaderCorrelationID: {cid}}, nil)
		}()
		return out
	}

	r := <-read("journaled")
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.Empty(t, auditOf(t, held.Store, "journaled"), "answered before the commit")
	segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	require.NoError(t, err)
	require.NotEmpty(t, segs)

	require.NoError(t, os.RemoveAll(dir))
	waiting := read("not-journaled")
	assert.Never(t, func() bool { return len(waiting) > 0 }, 300*time.Millisecond, 10*time.Millisecond,
		"answered with its record neither journaled nor committed")
	close(held.release)
	r = <-waiting
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.Len(t, auditOf(t, held.Store, "not-journaled"), 1, "committed before its answer")
	assert.Len(t, auditOf(t, held.Store, "journaled"), 1)
}
