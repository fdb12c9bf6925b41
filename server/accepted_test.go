package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// TestAcceptedHandsOverTheStoredVersion: after a create and an update the
// server hands the delivery workers (Config.Accepted) the version it
// stored, numbered, with its artifacts' exact bytes and the size and
// SHA-256 the store recorded for them: what delivery.Held keys and checks
// the bytes by.
func TestAcceptedHandsOverTheStoredVersion(t *testing.T) {
	t.Parallel()
	var (
		mu  sync.Mutex
		got []*store.Report
		st  store.Store
	)
	e := newEnv(t, withStore(t), func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		sc.Kick = func() {} // no worker: what it would be handed is the test's
		sc.Accepted = func(r *store.Report) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, r)
		}
		st = sc.Store
	})
	_, srID := firstPending(t, e.sim, 32)
	files := [][]byte{pdf("accepted, version 1"), pdf("accepted, version 2")}
	r := post(t, e.base+"/DiagnosticReport", report{srID: srID, status: "preliminary", text: "P " + phiMarker, pdfs: files[:1]}.json(), nil)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	id := r.json(t)["id"].(string)
	r = put(t, e.base+"/DiagnosticReport/"+id, report{srID: srID, status: "final", text: "F " + phiMarker, id: id, pdfs: files[1:]}.json(), nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 2)
	for i, v := range got {
		assert.Equal(t, []any{"acme", id, i + 1}, []any{v.Domain, v.ID, v.Version})
		require.Len(t, v.Artifacts, 1)
		a := v.Artifacts[0]
		sum := sha256.Sum256(files[i])
		assert.Equal(t, files[i], a.Data)
		assert.Equal(t, int64(len(files[i])), a.Size)
		assert.Equal(t, hex.EncodeToString(sum[:]), a.SHA256)
		stored, err := st.ReportArtifact(context.Background(), "acme", id, v.Version, a.Index)
		require.NoError(t, err)
		assert.Equal(t, stored.Data, a.Data, "the store has the bytes handed over")
		assert.Equal(t, stored.SHA256, a.SHA256)
	}
}
