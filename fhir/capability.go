package fhir

import (
	"fmt"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// ResourceCapability declares what the server implements for one resource
// type. The server passes exactly what it registers, so the
// CapabilityStatement never advertises more.
type ResourceCapability struct {
	// Type is the resource type, e.g. "ServiceRequest".
	Type string
	// Interactions are R4 type-restful-interaction codes: read, vread,
	// update, patch, delete, history-instance, history-type, create,
	// search-type.
	Interactions []string
	// Search are the search parameters of search-type.
	Search []ParamSpec
	// Includes are the _include values served.
	Includes []string
	// RevIncludes are the _revinclude values served.
	RevIncludes []string
	// Versioning is no-version, versioned or versioned-update; empty
	// leaves it out.
	Versioning string
	// ConditionalCreate is set when create honours If-None-Exist.
	ConditionalCreate bool
	// ConditionalUpdate is set when update honours search criteria.
	ConditionalUpdate bool
	// UpdateCreate is set when update can create a new resource at a
	// client-chosen id.
	UpdateCreate bool
	// Profile is the base profile the server uses for the type.
	Profile string
	// SupportedProfiles are further profiles instances conform to.
	SupportedProfiles []string
	// Documentation explains how the type is served.
	Documentation string
	// Operations are the operations defined on the type or its instances.
	Operations []OperationCapability
	// Canonicals are extensions of the resource entry with a canonical
	// value, by extension URL, in order (the Subscriptions Backport IG's
	// subscription topic canonicals).
	Canonicals []CanonicalExtension
}

// CanonicalExtension is an extension whose value is a canonical URL.
type CanonicalExtension struct{ URL, Value string }

// OperationCapability is one operation a resource type serves
// (CapabilityStatement.rest.resource.operation).
type OperationCapability struct {
	// Name is the operation's name without the "$".
	Name string
	// Definition is the canonical URL of its OperationDefinition.
	Definition    string
	Documentation string
}

// OAuthURIs are the SMART on FHIR authorization endpoints advertised through
// the oauth-uris extension (SMART App Launch 1.0).
type OAuthURIs struct {
	// Authorize is the authorization endpoint; empty for backend-only
	// (client credentials) servers.
	Authorize string
	// Token is the token endpoint.
	Token string
}

// CapabilityConfig is what the CapabilityStatement declares.
type CapabilityConfig struct {
	// Software and Version name the server software.
	Software string
	Version  string
	// BaseURL is the FHIR base of this instance (implementation.url).
	BaseURL string
	// Date is when the statement was last changed, normally the process
	// start; zero means when this package was loaded, so the statement
	// stays the same between requests.
	Date time.Time
	// Resources are the resource types served, in the order listed.
	Resources []ResourceCapability
	// SecurityDescription explains how clients authenticate.
	SecurityDescription string
	// SecurityServices are R4 restful-security-service codes (OAuth,
	// SMART-on-FHIR, Basic, Certificates...).
	SecurityServices []string
	// CORS is set when the server answers CORS preflights.
	CORS bool
	// OAuth, when set, advertises SMART endpoints.
	OAuth *OAuthURIs
	// Instantiates are the canonical CapabilityStatements this one
	// implements.
	Instantiates []string
}

var loaded = time.Now().UTC()

// typeInteractions is the R4 type-restful-interaction value set: the
// samply enum also holds the system-level codes (search, batch...), which
// are invalid on a resource.
var typeInteractions = map[string]bool{
	"read": true, "vread": true, "update": true, "patch": true, "delete": true,
	"history-instance": true, "history-type": true, "create": true, "search-type": true,
}

const (
	securityServiceSystem = "http://terminology.hl7.org/CodeSystem/restful-security-service"
	oauthURIsExtension    = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
)

// CapabilityStatement builds the instance CapabilityStatement served at
// [base]/metadata: status active, kind instance, FHIR 4.0.1, JSON only, one
// rest entry in server mode listing cfg.Resources and nothing else.
//
// It panics on a resource type, interaction or search parameter type that
// R4 does not define: that is a bug in the server's declaration, and
// dropping the entry quietly would hide it.
func CapabilityStatement(cfg CapabilityConfig) *models.CapabilityStatement {
	date := cfg.Date
	if date.IsZero() {
		date = loaded
	}
	software := cfg.Software
	if software == "" {
		software = "qubs-fhir-bridge"
	}
	cs := &models.CapabilityStatement{
		Status:      models.PublicationStatusActive,
		Date:        date.UTC().Format(time.RFC3339),
		Kind:        models.CapabilityStatementKindInstance,
		FhirVersion: models.FHIRVersion4_0_1,
		Format:      []string{ContentTypeFHIRJSON, "json"},
		Software:    &models.CapabilityStatementSoftware{Name: software},
		Implementation: &models.CapabilityStatementImplementation{
			Description: software + " FHIR R4 endpoint",
		},
	}
	cs.Instantiates = cfg.Instantiates
	if cfg.Version != "" {
		cs.Software.Version = ptr(cfg.Version)
	}
	if cfg.BaseURL != "" {
		cs.Implementation.Url = ptr(cfg.BaseURL)
	}
	rest := models.CapabilityStatementRest{Mode: models.RestfulCapabilityModeServer}
	if sec := security(cfg); sec != nil {
		rest.Security = sec
	}
	for _, rc := range cfg.Resources {
		rest.Resource = append(rest.Resource, restResource(rc))
	}
	cs.Rest = []models.CapabilityStatementRest{rest}
	return cs
}

func security(cfg CapabilityConfig) *models.CapabilityStatementRestSecurity {
	if cfg.SecurityDescription == "" && len(cfg.SecurityServices) == 0 && !cfg.CORS && cfg.OAuth == nil {
		return nil
	}
	sec := &models.CapabilityStatementRestSecurity{}
	if cfg.CORS {
		sec.Cors = ptr(true)
	}
	if cfg.SecurityDescription != "" {
		sec.Description = ptr(cfg.SecurityDescription)
	}
	for _, code := range cfg.SecurityServices {
		sec.Service = append(sec.Service, models.CodeableConcept{
			Coding: []models.Coding{{System: ptr(securityServiceSystem), Code: ptr(code)}},
		})
	}
	if o := cfg.OAuth; o != nil {
		ext := models.Extension{Url: oauthURIsExtension}
		if o.Token != "" {
			ext.Extension = append(ext.Extension, models.Extension{Url: "token", ValueUri: ptr(o.Token)})
		}
		if o.Authorize != "" {
			ext.Extension = append(ext.Extension, models.Extension{Url: "authorize", ValueUri: ptr(o.Authorize)})
		}
		sec.Extension = append(sec.Extension, ext)
	}
	return sec
}

func restResource(rc ResourceCapability) models.CapabilityStatementRestResource {
	r := models.CapabilityStatementRestResource{
		Type:             mustCode[models.ResourceType]("resource type", rc.Type),
		SupportedProfile: rc.SupportedProfiles,
		SearchInclude:    rc.Includes,
		SearchRevInclude: rc.RevIncludes,
	}
	for _, e := range rc.Canonicals {
		r.Extension = append(r.Extension, models.Extension{Url: e.URL, ValueCanonical: ptr(e.Value)})
	}
	if rc.Profile != "" {
		r.Profile = ptr(rc.Profile)
	}
	if rc.Documentation != "" {
		r.Documentation = ptr(rc.Documentation)
	}
	for _, in := range rc.Interactions {
		if !typeInteractions[in] {
			panic(fmt.Sprintf("fhir: CapabilityStatement: %q is not a type-level interaction of R4", in))
		}
		r.Interaction = append(r.Interaction, models.CapabilityStatementRestResourceInteraction{
			Code: mustCode[models.TypeRestfulInteraction]("interaction", in),
		})
	}
	if rc.Versioning != "" {
		r.Versioning = ptr(mustCode[models.ResourceVersionPolicy]("versioning", rc.Versioning))
	}
	if rc.ConditionalCreate {
		r.ConditionalCreate = ptr(true)
	}
	if rc.ConditionalUpdate {
		r.ConditionalUpdate = ptr(true)
	}
	if rc.UpdateCreate {
		r.UpdateCreate = ptr(true)
	}
	for _, p := range rc.Search {
		sp := models.CapabilityStatementRestResourceSearchParam{
			Name: p.Name,
			Type: mustCode[models.SearchParamType]("search parameter type", p.Type),
		}
		if p.Definition != "" {
			sp.Definition = ptr(p.Definition)
		}
		if p.Documentation != "" {
			sp.Documentation = ptr(p.Documentation)
		}
		r.SearchParam = append(r.SearchParam, sp)
	}
	for _, op := range rc.Operations {
		o := models.CapabilityStatementRestResourceOperation{Name: op.Name, Definition: op.Definition}
		if op.Documentation != "" {
			o.Documentation = ptr(op.Documentation)
		}
		r.Operation = append(r.Operation, o)
	}
	return r
}

// mustCode is lookupCode for declarations, where an unknown code is a bug.
func mustCode[T any](what, code string) T {
	v, ok := lookupCode[T](code)
	if !ok {
		panic(fmt.Sprintf("fhir: CapabilityStatement: %s %q is not an R4 code", what, code))
	}
	return v
}
