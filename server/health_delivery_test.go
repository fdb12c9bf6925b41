package server_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// TestReadyzDeliveryFigures: /readyz shows, per domain, what waits, how
// long the oldest has waited and what failed.
func TestReadyzDeliveryFigures(t *testing.T) {
	e := newEnv(t, withStore(t))
	_, srID := firstPending(t, e.sim, 8)
	e.sim.AddFault(qubssim.Fault{Route: "/integrations/", Status: http.StatusServiceUnavailable})
	r := post(t, e.base+"/DiagnosticReport", report{srID: srID, status: "preliminary", text: "Prelim " + phiMarker}.json(), nil)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	ready := get(t, e.srv.URL+"/readyz")
	var body struct {
		Checks struct {
			Deliveries map[string]struct {
				Pending    int   `json:"pending"`
				Failed     int   `json:"failed"`
				OldestSecs int64 `json:"oldest_pending_age_seconds"`
			} `json:"deliveries"`
		} `json:"checks"`
	}
	require.NoError(t, json.Unmarshal(ready.body, &body), "%s", ready.body)
	acme, ok := body.Checks.Deliveries["acme"]
	require.True(t, ok, "%s", ready.body)
	assert.Equal(t, 1, acme.Pending)
	assert.Equal(t, 0, acme.Failed)
	assert.GreaterOrEqual(t, acme.OldestSecs, int64(0))
	assert.NotContains(t, string(ready.body), phiMarker)
}
