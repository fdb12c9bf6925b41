package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// TestWorklistHandlersDiscloseWhatTheyAnswer holds the worklist's handlers
// to reporting, through disclose, exactly the resources and patients the
// audit's re-reading of their answers finds: the audit is to rely on
// disclose alone.
func TestWorklistHandlersDiscloseWhatTheyAnswer(t *testing.T) {
	t.Parallel()
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Seed: 1})
	require.NoError(t, err)
	t.Cleanup(func() { sim.Close() })
	client, err := qubs.New(qubs.Config{BaseURL: sim.URL, TokenURL: sim.TokenURL(), ClientID: qubssim.DefaultClientID,
		ClientSecret: qubssim.DefaultClientSecret, AuthStyle: oauth2.AuthStyleInParams})
	require.NoError(t, err)
	s := New(Config{QUBS: client, CursorKey: []byte("test cursor key"), Version: "test"})

	// serve runs one handler as the router would after its middleware, and
	// returns the answer's body.
	serve := func(t *testing.T, h func(*gin.Context) error, target string, params ...gin.Param) []byte {
		t.Helper()
		rec := httptest.NewRecorder()
		c, _ := gin.CreateTestContext(rec)
		c.Request = httptest.NewRequest(http.MethodGet, target, nil)
		c.Params = params
		st := state(c)
		st.domain, st.principal = "acme", auth.Anonymous()
		require.NoError(t, h(c))
		require.Equal(t, http.StatusOK, rec.Code, "%s", rec.Body)
		patients, entities := DisclosedInAnswer(rec.Body.Bytes())
		require.NotEmpty(t, entities, "the answer carries resources")
		assert.ElementsMatch(t, dedupe(entities), dedupe(slices.Clone(st.disclosed.entities)), "entities")
		assert.ElementsMatch(t, dedupe(patients), dedupe(slices.Clone(st.disclosed.patients)), "patients")
		return rec.Body.Bytes()
	}

	const includes = "&_include=ServiceRequest:subject&_include=ServiceRequest:requester&_include=ServiceRequest:performer"
	for _, q := range []string{"_count=50", "_count=50" + includes, "_count=20&status=active" + includes} {
		t.Run(q, func(t *testing.T) {
			serve(t, s.searchServiceRequests, "/fhir/acme/ServiceRequest?"+q)
		})
	}

	// Reads: a ServiceRequest and each resource derived from it.
	id := sim.PendingIDs("acme")[7]
	t.Run("read", func(t *testing.T) {
		serve(t, s.readServiceRequest, "/fhir/acme/ServiceRequest/"+id, gin.Param{Key: "id", Value: id})
	})
	a, ok := sim.Appointment("acme", id)
	require.True(t, ok)
	m, err := s.mapAppointment("acme", &a)
	require.NoError(t, err)
	for typ, rid := range map[string]string{"Patient": m.PatientID, "Organization": m.ClinicID} {
		if rid == "" {
			continue
		}
		t.Run("read "+typ, func(t *testing.T) {
			serve(t, s.readDerived(typ), "/fhir/acme/"+typ+"/"+rid, gin.Param{Key: "id", Value: rid})
		})
	}
	for _, rid := range []string{m.ReferrerID, m.RadiologistID} {
		if rid == "" {
			continue
		}
		t.Run("read Practitioner", func(t *testing.T) {
			serve(t, s.readDerived("Practitioner"), "/fhir/acme/Practitioner/"+rid, gin.Param{Key: "id", Value: rid})
		})
	}
}

// DisclosedInAnswer is the audit's former re-read of an answer, kept for
// the tests as the oracle the handlers' own reports are held to: the
// patients and resources in a FHIR answer (the resource itself, or a
// Bundle's entries, and the patients they are about). Exported from a test
// file, so that the router-level tests (package server_test) use it too.
func DisclosedInAnswer(body []byte) (patients, entities []string) {
	type ref struct {
		Reference string `json:"reference"`
	}
	type res struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
		Subject      *ref   `json:"subject"`
		Patient      *ref   `json:"patient"`
		Entry        []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	add := func(r *res) {
		if r.ResourceType == "" || r.ResourceType == "OperationOutcome" || r.ResourceType == "Bundle" || r.ID == "" {
			return
		}
		entities = append(entities, r.ResourceType+"/"+r.ID)
		if r.ResourceType == "Patient" {
			patients = append(patients, "Patient/"+r.ID)
		}
		for _, p := range []*ref{r.Subject, r.Patient} {
			if p != nil && strings.HasPrefix(p.Reference, "Patient/") {
				patients = append(patients, p.Reference)
			}
		}
	}
	var top res
	if json.Unmarshal(body, &top) != nil {
		return nil, nil
	}
	add(&top)
	for _, e := range top.Entry {
		var r res
		if json.Unmarshal(e.Resource, &r) == nil {
			add(&r)
		}
	}
	return patients, entities
}
