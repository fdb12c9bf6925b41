package fhir_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
)

// capabilityJSON is the subset of a CapabilityStatement the tests read.
type capabilityJSON struct {
	ResourceType   string   `json:"resourceType"`
	Status         string   `json:"status"`
	Date           string   `json:"date"`
	Kind           string   `json:"kind"`
	FhirVersion    string   `json:"fhirVersion"`
	Format         []string `json:"format"`
	Implementation struct {
		Description string `json:"description"`
		URL         string `json:"url"`
	} `json:"implementation"`
	Software struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"software"`
	Rest []struct {
		Mode     string `json:"mode"`
		Security *struct {
			Cors        *bool  `json:"cors"`
			Description string `json:"description"`
			Service     []struct {
				Coding []struct{ System, Code string } `json:"coding"`
			} `json:"service"`
			Extension []struct {
				URL       string `json:"url"`
				Extension []struct {
					URL      string `json:"url"`
					ValueURI string `json:"valueUri"`
				} `json:"extension"`
			} `json:"extension"`
		} `json:"security"`
		Resource []struct {
			Type              string   `json:"type"`
			Documentation     string   `json:"documentation"`
			Versioning        string   `json:"versioning"`
			ConditionalCreate *bool    `json:"conditionalCreate"`
			SearchInclude     []string `json:"searchInclude"`
			Interaction       []struct {
				Code string `json:"code"`
			} `json:"interaction"`
			SearchParam []struct {
				Name, Type, Definition, Documentation string
			} `json:"searchParam"`
		} `json:"resource"`
	} `json:"rest"`
}

func TestCapabilityStatement(t *testing.T) {
	date := time.Date(2025, 1, 10, 3, 4, 5, 0, time.FixedZone("AEDT", 11*3600))
	srSearch := []fhir.ParamSpec{
		{Name: "patient", Type: "reference", Definition: "http://hl7.org/fhir/SearchParameter/clinical-patient", Documentation: "Patient/{id}"},
		{Name: "status", Type: "token"},
		{Name: "_cursor", Type: "special", Documentation: "paging"},
	}
	cases := []struct {
		name      string
		resources []fhir.ResourceCapability
	}{
		{name: "no resources"},
		{name: "worklist", resources: []fhir.ResourceCapability{
			{Type: "ServiceRequest", Interactions: []string{"read", "search-type"}, Search: srSearch,
				Includes: []string{"ServiceRequest:subject"}, Documentation: "Studies pending reporting"},
			{Type: "Patient", Interactions: []string{"read"}},
		}},
		{name: "reports", resources: []fhir.ResourceCapability{
			{Type: "DiagnosticReport", Interactions: []string{"create", "update", "read", "search-type"},
				Versioning: "no-version", ConditionalCreate: true, UpdateCreate: true,
				Search: []fhir.ParamSpec{{Name: "based-on", Type: "reference"}}},
			{Type: "Binary", Interactions: []string{"read"}},
			{Type: "Communication", Interactions: []string{"read", "create", "search-type"}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cs := fhir.CapabilityStatement(fhir.CapabilityConfig{
				Software: "qubs-fhir-bridge", Version: "1.2.3", BaseURL: "https://fhir.example.org/fhir/acme",
				Date: date, Resources: tc.resources, SecurityDescription: "loopback only",
			})
			raw, err := json.Marshal(cs)
			require.NoError(t, err)
			fhirtest.RequireValidR4(t, raw)

			var got capabilityJSON
			require.NoError(t, json.Unmarshal(raw, &got))
			assert.Equal(t, "CapabilityStatement", got.ResourceType)
			assert.Equal(t, "active", got.Status)
			assert.Equal(t, "instance", got.Kind)
			assert.Equal(t, "4.0.1", got.FhirVersion)
			assert.Equal(t, "2025-01-09T16:04:05Z", got.Date)
			assert.ElementsMatch(t, []string{"application/fhir+json", "json"}, got.Format)
			assert.Equal(t, "https://fhir.example.org/fhir/acme", got.Implementation.URL)
			assert.NotEmpty(t, got.Implementation.Description)
			assert.Equal(t, "qubs-fhir-bridge", got.Software.Name)
			assert.Equal(t, "1.2.3", got.Software.Version)
			require.Len(t, got.Rest, 1)
			rest := got.Rest[0]
			assert.Equal(t, "server", rest.Mode)
			require.NotNil(t, rest.Security)
			assert.Equal(t, "loopback only", rest.Security.Description)

			// Exactly the resources given, in order, with exactly their
			// interactions, parameters and includes.
			require.Len(t, rest.Resource, len(tc.resources))
			for i, want := range tc.resources {
				r := rest.Resource[i]
				assert.Equal(t, want.Type, r.Type)
				var codes []string
				for _, in := range r.Interaction {
					codes = append(codes, in.Code)
				}
				assert.Equal(t, want.Interactions, codes)
				assert.Equal(t, want.Includes, r.SearchInclude)
				assert.Equal(t, want.Documentation, r.Documentation)
				assert.Equal(t, want.Versioning, r.Versioning)
				assert.Equal(t, want.ConditionalCreate, r.ConditionalCreate != nil && *r.ConditionalCreate)
				require.Len(t, r.SearchParam, len(want.Search))
				for j, p := range want.Search {
					assert.Equal(t, p.Name, r.SearchParam[j].Name)
					assert.Equal(t, p.Type, r.SearchParam[j].Type)
					assert.Equal(t, p.Definition, r.SearchParam[j].Definition)
					assert.Equal(t, p.Documentation, r.SearchParam[j].Documentation)
				}
			}
		})
	}
}

func TestCapabilityStatementSecurity(t *testing.T) {
	cs := fhir.CapabilityStatement(fhir.CapabilityConfig{
		Software: "qubs-fhir-bridge", BaseURL: "https://b/fhir/acme", CORS: true,
		SecurityServices: []string{"SMART-on-FHIR"},
		OAuth:            &fhir.OAuthURIs{Token: "https://auth.example.org/token", Authorize: "https://auth.example.org/authorize"},
	})
	raw, err := json.Marshal(cs)
	require.NoError(t, err)
	fhirtest.RequireValidR4(t, raw)
	var got capabilityJSON
	require.NoError(t, json.Unmarshal(raw, &got))
	sec := got.Rest[0].Security
	require.NotNil(t, sec)
	require.NotNil(t, sec.Cors)
	assert.True(t, *sec.Cors)
	require.Len(t, sec.Service, 1)
	assert.Equal(t, "SMART-on-FHIR", sec.Service[0].Coding[0].Code)
	assert.Equal(t, "http://terminology.hl7.org/CodeSystem/restful-security-service", sec.Service[0].Coding[0].System)
	require.Len(t, sec.Extension, 1)
	assert.Equal(t, "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris", sec.Extension[0].URL)
	assert.Len(t, sec.Extension[0].Extension, 2)
	assert.Empty(t, got.Rest[0].Resource)
}

func TestCapabilityStatementDefaults(t *testing.T) {
	a, err := json.Marshal(fhir.CapabilityStatement(fhir.CapabilityConfig{}))
	require.NoError(t, err)
	fhirtest.RequireValidR4(t, a)
	b, err := json.Marshal(fhir.CapabilityStatement(fhir.CapabilityConfig{}))
	require.NoError(t, err)
	assert.JSONEq(t, string(a), string(b), "the date must not change between requests")
	assert.NotContains(t, string(a), `"security"`)
}

func TestCapabilityStatementRefusesUnknownCodes(t *testing.T) {
	cases := []struct {
		name string
		rc   fhir.ResourceCapability
	}{
		{"resource type", fhir.ResourceCapability{Type: "Worklist"}},
		{"interaction", fhir.ResourceCapability{Type: "Patient", Interactions: []string{"search"}}},
		{"search param type", fhir.ResourceCapability{Type: "Patient", Search: []fhir.ParamSpec{{Name: "x", Type: "text"}}}},
		{"versioning", fhir.ResourceCapability{Type: "Patient", Versioning: "sometimes"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Panics(t, func() {
				fhir.CapabilityStatement(fhir.CapabilityConfig{Resources: []fhir.ResourceCapability{tc.rc}})
			})
		})
	}
}
