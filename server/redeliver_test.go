package server_test

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
)

// deliveryState reads a report's delivery state off its extension.
func deliveryState(t testing.TB, e *env, id string) string {
	t.Helper()
	body := string(get(t, e.base+"/DiagnosticReport/"+id).body)
	for _, st := range []string{"pending", "delivered", "failed", "superseded"} {
		if strings.Contains(body, `"valueCode":"`+st+`"`) {
			return st
		}
	}
	return ""
}

// TestRedeliver: QUBS refuses a report (404: not pending reporting), the
// delivery fails for good; the cause is fixed in QUBS, the
// client asks for $redeliver, and the worker delivers the version exactly
// once. Unknown reports are 404, reports not failed 409; the operation is
// in the CapabilityStatement. On SQLite and PostgreSQL.
func TestRedeliver(t *testing.T) {
	t.Parallel()
	for name, withDB := range map[string]func(testing.TB) envOption{"sqlite": withStore, "postgres": withPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withDB(t))
			appt, srID := firstPending(t, e.sim, 11)
			// QUBS refuses every submission: the appointment is not
			// pending reporting at the moment (404).
			e.sim.AddFault(qubssim.Fault{Method: http.MethodPost, Route: "/report", Status: http.StatusNotFound})
			r := post(t, e.base+"/DiagnosticReport", report{srID: srID, status: "final", text: "Final " + phiMarker}.json(), nil)
			require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
			id := r.json(t)["id"].(string)
			eventually(t, "the delivery failing", func() bool { return deliveryState(t, e, id) == "failed" })
			require.Empty(t, e.sim.Reports("acme", appt.AppointmentID))

			op := e.base + "/DiagnosticReport/" + id + "/$redeliver"
			assert.Equal(t, http.StatusNotFound, do(t, http.MethodPost, e.base+"/DiagnosticReport/nope/$redeliver", nil, nil).status)
			bad := do(t, http.MethodPost, op, http.Header{"Content-Type": {"application/fhir+json"}},
				strings.NewReader(`{"resourceType":"Parameters","parameter":[{"name":"x","valueString":"y"}]}`))
			assert.Equal(t, http.StatusBadRequest, bad.status, "%s", bad.body)

			// The cause is fixed in QUBS; the client asks again.
			e.sim.ClearFaults()
			res := do(t, http.MethodPost, op, http.Header{"Content-Type": {"application/fhir+json"}},
				strings.NewReader(`{"resourceType":"Parameters"}`))
			require.Equal(t, http.StatusOK, res.status, "%s", res.body)
			var p struct {
				ResourceType string
				Parameter    []map[string]any
			}
			require.NoError(t, json.Unmarshal(res.body, &p))
			assert.Equal(t, "Parameters", p.ResourceType)
			byName := map[string]any{}
			for _, pp := range p.Parameter {
				for k, v := range pp {
					if k != "name" {
						byName[pp["name"].(string)] = v
					}
				}
			}
			// A worker may claim the version between the requeue and the
			// answer (the queue is live): then it is leased, attempt 2, or
			// already delivered, as docs/deliveries.md says.
			assert.Contains(t, []any{"pending", "delivered"}, byName["state"])
			assert.Contains(t, []any{float64(1), float64(2)}, byName["attempts"], "the failed attempt is history, not reset")
			assert.Equal(t, map[string]any{"reference": "DiagnosticReport/" + id + "/_history/1"}, byName["report"])

			eventually(t, "the redelivery", func() bool { return deliveryState(t, e, id) == "delivered" })
			assert.Len(t, e.sim.Reports("acme", appt.AppointmentID), 1, "delivered exactly once")

			again := do(t, http.MethodPost, op, nil, nil)
			assert.Equal(t, http.StatusConflict, again.status)
			assert.Contains(t, outcome(t, again), "delivered")
			assert.Len(t, e.sim.Reports("acme", appt.AppointmentID), 1)

			md := get(t, e.base+"/metadata")
			assert.Contains(t, string(md.body), `"name":"redeliver"`)
			assert.Contains(t, string(md.body), server.RedeliverDefinition)
		})
	}
}

// TestRedeliverNeedsUpdatePermission: $redeliver changes what QUBS gets,
// so it takes DiagnosticReport update permission, not read.
func TestRedeliverNeedsUpdatePermission(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t), withStaticTokens(t, []auth.StaticEntry{
		{Name: "reader", SHA256: auth.HashToken("reader-token-0123456789abcdef012345"), Domains: []string{"acme"}, Scopes: "system/DiagnosticReport.rs"},
		{Name: "writer", SHA256: auth.HashToken("writer-token-0123456789abcdef012345"), Domains: []string{"acme"}, Scopes: "system/DiagnosticReport.u"},
	}))
	op := e.base + "/DiagnosticReport/nope/$redeliver"
	assert.Equal(t, http.StatusForbidden, do(t, http.MethodPost, op, bearer("reader-token-0123456789abcdef012345"), nil).status)
	assert.Equal(t, http.StatusNotFound, do(t, http.MethodPost, op, bearer("writer-token-0123456789abcdef012345"), nil).status)
}

// TestRedeliverOperationDefinition: the OperationDefinition the
// CapabilityStatement points at is valid R4 and names the same canonical.
func TestRedeliverOperationDefinition(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/OperationDefinition-DiagnosticReport-redeliver.json")
	require.NoError(t, err)
	fhirtest.RequireValidR4(t, b)
	var od struct{ URL, Code string }
	require.NoError(t, json.Unmarshal(b, &od))
	assert.Equal(t, server.RedeliverDefinition, od.URL)
	assert.Equal(t, "redeliver", od.Code)
}
