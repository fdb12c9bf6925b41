package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// TestDeliveryStateSaysWhyItWaits: a report QUBS keeps refusing is pending
// with how often it was tried, the kind of the last failure and when it is
// tried next; once delivered, none of that remains.
func TestDeliveryStateSaysWhyItWaits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	e.sim.AddFault(qubssim.Fault{Route: "/report", Status: http.StatusServiceUnavailable})
	_, srID := firstPending(t, e.sim, 44)
	r := do(t, http.MethodPost, e.base+"/DiagnosticReport", http.Header{"Content-Type": {"application/fhir+json"}},
		strings.NewReader(string(report{srID: srID, status: "final", text: "Final " + phiMarker}.json())))
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	id := r.json(t)["id"].(string)

	ext := func(res map[string]any) map[string]any {
		out := map[string]any{}
		for _, x := range res["extension"].([]any) {
			m := x.(map[string]any)
			for k, v := range m {
				if k != "url" {
					out[m["url"].(string)] = v
				}
			}
		}
		return out
	}
	var got map[string]any
	eventually(t, "a failed attempt shows on the report", func() bool {
		got = ext(get(t, e.base+"/DiagnosticReport/"+id).json(t))
		return got[mapping.ExtDeliveryLastError] != nil
	})
	assert.Equal(t, "pending", got[mapping.ExtDeliveryState])
	assert.Equal(t, "transient", got[mapping.ExtDeliveryLastError])
	assert.GreaterOrEqual(t, got[mapping.ExtDeliveryAttempts], float64(1))
	assert.NotEmpty(t, got[mapping.ExtDeliveryNextAttempt])

	e.sim.ClearFaults()
	eventually(t, "delivered once QUBS answers", func() bool {
		got = ext(get(t, e.base+"/DiagnosticReport/"+id).json(t))
		return got[mapping.ExtDeliveryState] == "delivered"
	})
	assert.Nil(t, got[mapping.ExtDeliveryNextAttempt])
	assert.Nil(t, got[mapping.ExtDeliveryLastError])
}
