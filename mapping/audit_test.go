package mapping

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// TestGoldenAudit maps each testdata/audit/<case>.record.json (a
// store.AuditRecord) and compares the AuditEvent with <case>.fhir.json,
// which must be valid R4 and give the record back.
func TestGoldenAudit(t *testing.T) {
	t.Parallel()
	runGolden(t, "audit", ".record.json", 7, func(t *testing.T, in []byte) any {
		var r store.AuditRecord
		require.NoError(t, json.Unmarshal(in, &r))
		ev, err := AuditEventFromRecord(&r)
		require.NoError(t, err)
		return ev
	}, func(t *testing.T, in, golden []byte) {
		requireValidJSON(t, golden)
		var r store.AuditRecord
		require.NoError(t, json.Unmarshal(in, &r))
		var ev fhir.AuditEvent
		require.NoError(t, json.Unmarshal(golden, &ev))
		requireBALPShape(t, ev)
		assert.Equal(t, safeRecord(r), recordFromAuditEvent(t, ev), "the record comes back from the AuditEvent")
	})
}

// safeRecord is r as the AuditEvent can give it back: free text FHIR-safe.
func safeRecord(r store.AuditRecord) store.AuditRecord {
	r.OutcomeDesc = safeString(r.OutcomeDesc)
	r.AgentID = safeString(r.AgentID)
	r.AgentMethod = safeString(r.AgentMethod)
	r.NetworkAddr = safeString(r.NetworkAddr)
	r.CorrelationID = safeString(r.CorrelationID)
	r.RequestPath = safeString(r.RequestPath)
	return r
}

// recordFromAuditEvent reads an AuditEvent back into the record it was
// made from, by the rules of the table in audit.go.
func recordFromAuditEvent(t *testing.T, ev fhir.AuditEvent) store.AuditRecord {
	t.Helper()
	var r store.AuditRecord
	r.ID = *ev.Id
	if ev.Source.Site != nil {
		r.Domain = *ev.Source.Site
	}
	var err error
	r.Recorded, err = time.Parse(time.RFC3339Nano, ev.Recorded)
	require.NoError(t, err)
	r.Action = ev.Action.Code()
	r.Outcome = ev.Outcome.Code()
	require.Len(t, ev.Subtype, 1)
	r.Interaction = *ev.Subtype[0].Code
	if ev.OutcomeDesc != nil {
		r.OutcomeDesc = *ev.OutcomeDesc
	}
	for _, e := range ev.Extension {
		if e.Url == ExtRequestRoute {
			r.RequestPath = *e.ValueString
		}
	}
	client := ev.Agent[0]
	if client.Who.Identifier != nil {
		r.AgentID = *client.Who.Identifier.Value
	}
	for _, e := range client.Extension {
		if e.Url == ExtAuthMethod {
			r.AgentMethod = *e.ValueString
		}
	}
	if len(client.Policy) > 0 {
		require.Len(t, client.Policy, 1)
		r.TokenID, err = url.PathUnescape(client.Policy[0])
		require.NoError(t, err)
	}
	if client.Network != nil {
		r.NetworkAddr = *client.Network.Address
	}
	for _, e := range ev.Entity {
		switch {
		case *e.Type.Code == "XrequestId":
			r.CorrelationID = *e.What.Identifier.Value
		case *e.Role.Code == "1":
			r.PatientRefs = append(r.PatientRefs, *e.What.Reference)
		case *e.Role.Code == "4":
			r.EntityRefs = append(r.EntityRefs, *e.What.Reference)
		case *e.Role.Code == "24":
			q, err := base64.StdEncoding.DecodeString(*e.Query)
			require.NoError(t, err)
			r.Query = string(q)
		default:
			t.Fatalf("unexpected entity %+v", e)
		}
	}
	return r
}

// requireBALPShape checks the parts every AuditEvent has, whatever the
// record: the type, the two agents in order, the source.
func requireBALPShape(t *testing.T, ev fhir.AuditEvent) {
	t.Helper()
	assert.Equal(t, SystemAuditEventType, *ev.Type.System)
	assert.Equal(t, "rest", *ev.Type.Code)
	assert.Equal(t, SystemRestfulInteraction, *ev.Subtype[0].System)
	require.Len(t, ev.Agent, 2)
	client, server := ev.Agent[0], ev.Agent[1]
	assert.Equal(t, "110153", *client.Type.Coding[0].Code, "the client is the Source Role ID")
	assert.True(t, client.Requestor)
	assert.Equal(t, "110152", *server.Type.Coding[0].Code, "the bridge is the Destination Role ID")
	assert.False(t, server.Requestor)
	assert.Equal(t, AuditObserver, *server.Who.Display)
	assert.Equal(t, AuditObserver, *ev.Source.Observer.Display)
	assert.Equal(t, "4", *ev.Source.Type[0].Code)
	for _, e := range ev.Entity {
		switch {
		case e.Role != nil && *e.Role.Code == "1":
			assert.Equal(t, "1", *e.Type.Code, "a patient is a Person")
		case e.Role != nil:
			assert.Equal(t, "2", *e.Type.Code, "resources and queries are System Objects")
		default:
			assert.Equal(t, SystemBALPAuditEntityType, *e.Type.System)
		}
	}
}

// TestAuditEventEveryCode maps a record for every interaction, action and
// outcome, each of which must give valid R4.
func TestAuditEventEveryCode(t *testing.T) {
	t.Parallel()
	r := store.AuditRecord{ID: "x", Domain: "acme", Recorded: time.Date(2025, 1, 10, 3, 4, 5, 0, time.UTC),
		AgentID: "c", NetworkAddr: "192.0.2.1", PatientRefs: []string{"Patient/1"}}
	actions := []string{store.AuditActionCreate, store.AuditActionRead, store.AuditActionUpdate, store.AuditActionDelete, store.AuditActionExecute}
	outcomes := []string{store.AuditOutcomeSuccess, store.AuditOutcomeMinorFailure, store.AuditOutcomeSeriousFailure, store.AuditOutcomeMajorFailure}
	for i, interaction := range store.AuditInteractions {
		r.Interaction = interaction
		r.Action = actions[i%len(actions)]
		r.Outcome = outcomes[i%len(outcomes)]
		t.Run(fmt.Sprintf("%s %s %s", interaction, r.Action, r.Outcome), func(t *testing.T) {
			ev, err := AuditEventFromRecord(&r)
			require.NoError(t, err)
			requireValidJSON(t, ev)
			assert.Equal(t, interaction, *ev.Subtype[0].Code)
			assert.Equal(t, r.Action, ev.Action.Code())
			assert.Equal(t, r.Outcome, ev.Outcome.Code())
		})
	}
}

func TestAuditEventFromRecordErrors(t *testing.T) {
	t.Parallel()
	valid := func() *store.AuditRecord {
		return &store.AuditRecord{ID: "a1", Recorded: time.Date(2025, 1, 10, 0, 0, 0, 0, time.UTC),
			Action: "R", Interaction: "read", Outcome: "0"}
	}
	_, err := AuditEventFromRecord(valid())
	require.NoError(t, err)
	_, err = AuditEventFromRecord(nil)
	assert.ErrorIs(t, err, ErrInvalidAuditRecord)

	tests := []struct {
		name   string
		modify func(r *store.AuditRecord)
	}{
		{"no id", func(r *store.AuditRecord) { r.ID = "" }},
		{"id that is not a FHIR id", func(r *store.AuditRecord) { r.ID = "a/b" }},
		{"no time", func(r *store.AuditRecord) { r.Recorded = time.Time{} }},
		{"unknown action", func(r *store.AuditRecord) { r.Action = "X" }},
		{"unknown outcome", func(r *store.AuditRecord) { r.Outcome = "1" }},
		{"unknown interaction", func(r *store.AuditRecord) { r.Interaction = "fetch" }},
		{"patient reference of another type", func(r *store.AuditRecord) { r.PatientRefs = []string{"Group/1"} }},
		{"absolute entity reference", func(r *store.AuditRecord) { r.EntityRefs = []string{"https://x/ServiceRequest/1"} }},
		{"entity reference with a bad id", func(r *store.AuditRecord) { r.EntityRefs = []string{"ServiceRequest/a b"} }},
		{"entity reference with a lower-case type", func(r *store.AuditRecord) { r.EntityRefs = []string{"serviceRequest/1"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := valid()
			tt.modify(r)
			ev, err := AuditEventFromRecord(r)
			assert.ErrorIs(t, err, ErrInvalidAuditRecord)
			assert.Nil(t, ev)
		})
	}
}

// TestAuditEventQueryHasNoValues checks the whole way from a search's
// parameters to the AuditEvent: what a client searched for stays out.
func TestAuditEventQueryHasNoValues(t *testing.T) {
	t.Parallel()
	const phi = "Citizen"
	r := &store.AuditRecord{ID: "q", Recorded: time.Date(2025, 1, 10, 0, 0, 0, 0, time.UTC),
		Action: "E", Interaction: "search-type", Outcome: "0",
		Query: store.AuditQuery("Patient", url.Values{"name": {phi}, "birthdate": {"1970-01-01"}})}
	ev, err := AuditEventFromRecord(r)
	require.NoError(t, err)
	b, err := json.Marshal(ev)
	require.NoError(t, err)
	requireValidJSON(t, b)
	assert.NotContains(t, string(b), phi)
	assert.NotContains(t, string(b), base64.StdEncoding.EncodeToString([]byte(phi)))
	q, err := base64.StdEncoding.DecodeString(*ev.Entity[0].Query)
	require.NoError(t, err)
	assert.Equal(t, "Patient?birthdate&name", string(q))
}
