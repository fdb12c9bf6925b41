package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// interaction is what a route does in FHIR's terms (R4 http.html). It
// decides, in one place, the SMART permission a caller needs, the BALP
// action of its audit record, and what the CapabilityStatement says.
type interaction string

const (
	interactionCapabilities interaction = "capabilities"        // public, not audited
	interactionDiscovery    interaction = "smart-configuration" // public, not audited
	interactionRead         interaction = "read"
	interactionVRead        interaction = "vread"
	interactionSearch       interaction = "search-type"
	interactionCreate       interaction = "create"
	interactionUpdate       interaction = "update"
	// interactionOperation is an operation that changes the resource's
	// delivery ($redeliver): it needs the type's update permission and is
	// audited as an update, so its record is committed before the answer.
	interactionOperation interaction = "operation"
	interactionDelete    interaction = "delete"
	// interactionQuery is an operation that reads ($status, $events): it
	// needs the type's read permission and is audited as an execute.
	interactionQuery interaction = "operation-query"
)

// public reports whether anyone may call it: SMART requires the
// CapabilityStatement and the discovery document to be readable without
// a token.
func (i interaction) public() bool {
	return i == interactionCapabilities || i == interactionDiscovery
}

// perm is the SMART v2 permission the interaction needs.
func (i interaction) perm() byte {
	switch i {
	case interactionRead, interactionVRead, interactionQuery:
		return 'r'
	case interactionDelete:
		return 'd'
	case interactionSearch:
		return 's'
	case interactionCreate:
		return 'c'
	case interactionUpdate, interactionOperation:
		return 'u'
	}
	return 0 // none: only public interactions have none
}

// auditAction is the BALP action of the interaction's record; "" means it
// is not audited (it discloses no PHI and changes nothing).
func (i interaction) auditAction() string {
	switch i {
	case interactionRead, interactionVRead:
		return store.AuditActionRead
	case interactionSearch, interactionQuery:
		return store.AuditActionExecute
	case interactionDelete:
		return store.AuditActionDelete
	case interactionCreate:
		return store.AuditActionCreate
	case interactionUpdate, interactionOperation:
		return store.AuditActionUpdate
	}
	return ""
}

// routeSpec is one route under /fhir/{domain}: the only place a route is
// declared. Registration, the scope check, the audit classification and
// the CapabilityStatement all read the table, so they cannot disagree, and
// a route registered any other way is refused (authenticate denies what
// it finds no spec for).
type routeSpec struct {
	method      string
	path        string // under /fhir/:domain
	typ         string // resource type; "" for system-level routes
	interaction interaction
	search      *fhir.SearchSpec // search-type routes
	// withStore routes are served only when the bridge has a store.
	withStore bool
	// raw routes answer in their own media type (Binary): no JSON
	// negotiation before them.
	raw bool
	// operation describes an interactionOperation route for the
	// CapabilityStatement.
	operation *fhir.OperationCapability
	handler   func(*gin.Context) error
}

// auditCode is the restful-interaction code of the route's audit record.
func (i interaction) auditCode() string {
	if i == interactionQuery {
		return string(interactionOperation)
	}
	return string(i)
}

// fullPath is the gin pattern of the route, as c.FullPath reports it.
func (r *routeSpec) fullPath() string { return fhirBasePattern + r.path }

const fhirBasePattern = "/fhir/:domain"

// routeTable is every FHIR route, in CapabilityStatement order.
func (s *Server) routeTable() []routeSpec {
	t := []routeSpec{
		{method: http.MethodGet, path: "/metadata", interaction: interactionCapabilities, handler: s.metadata},
		{method: http.MethodGet, path: "/.well-known/smart-configuration", interaction: interactionDiscovery, handler: s.smartConfiguration},

		{method: http.MethodGet, path: "/ServiceRequest", typ: "ServiceRequest", interaction: interactionSearch, search: s.srSearch(), handler: s.searchServiceRequests},
		{method: http.MethodPost, path: "/ServiceRequest/_search", typ: "ServiceRequest", interaction: interactionSearch, search: s.srSearch(), handler: s.searchServiceRequests},
		{method: http.MethodGet, path: "/ServiceRequest/:id", typ: "ServiceRequest", interaction: interactionRead, handler: s.readServiceRequest},
	}
	for _, typ := range derivedTypes {
		t = append(t, routeSpec{method: http.MethodGet, path: "/" + typ + "/:id", typ: typ, interaction: interactionRead, handler: s.readDerived(typ)})
	}
	return append(t,
		routeSpec{method: http.MethodGet, path: "/DocumentReference", typ: "DocumentReference", interaction: interactionSearch, search: &documentReferenceSearch, handler: s.searchDocumentReferences},
		routeSpec{method: http.MethodGet, path: "/DocumentReference/:id", typ: "DocumentReference", interaction: interactionRead, handler: s.readDocumentReference},
		routeSpec{method: http.MethodPost, path: "/DocumentReference", typ: "DocumentReference", interaction: interactionCreate, handler: s.createDocumentReference},

		routeSpec{method: http.MethodGet, path: "/Binary/:id", typ: "Binary", interaction: interactionRead, raw: true, handler: s.readBinary},
		routeSpec{method: http.MethodPost, path: "/Binary", typ: "Binary", interaction: interactionCreate, withStore: true, handler: s.createBinary},

		routeSpec{method: http.MethodGet, path: "/Communication", typ: "Communication", interaction: interactionSearch, search: &communicationSearch, handler: s.searchCommunications},
		routeSpec{method: http.MethodGet, path: "/Communication/:id", typ: "Communication", interaction: interactionRead, handler: s.readCommunication},
		routeSpec{method: http.MethodPost, path: "/Communication", typ: "Communication", interaction: interactionCreate, handler: s.createCommunication},

		routeSpec{method: http.MethodGet, path: "/Flag", typ: "Flag", interaction: interactionSearch, search: &flagSearch, handler: s.searchFlags},
		routeSpec{method: http.MethodGet, path: "/Flag/:id", typ: "Flag", interaction: interactionRead, handler: s.readFlag},

		routeSpec{method: http.MethodPost, path: "/DiagnosticReport", typ: "DiagnosticReport", interaction: interactionCreate, withStore: true, handler: s.createDiagnosticReport},
		routeSpec{method: http.MethodGet, path: "/DiagnosticReport", typ: "DiagnosticReport", interaction: interactionSearch, search: &diagnosticReportSearch, withStore: true, handler: s.searchDiagnosticReports},
		routeSpec{method: http.MethodGet, path: "/DiagnosticReport/:id", typ: "DiagnosticReport", interaction: interactionRead, withStore: true, handler: s.readDiagnosticReport},
		routeSpec{method: http.MethodPut, path: "/DiagnosticReport/:id", typ: "DiagnosticReport", interaction: interactionUpdate, withStore: true, handler: s.updateDiagnosticReport},
		routeSpec{method: http.MethodGet, path: "/DiagnosticReport/:id/_history/:vid", typ: "DiagnosticReport", interaction: interactionVRead, withStore: true, handler: s.vreadDiagnosticReport},
		routeSpec{method: http.MethodPost, path: "/DiagnosticReport/:id/$redeliver", typ: "DiagnosticReport", interaction: interactionOperation, withStore: true, operation: &redeliverOperation, handler: s.redeliverDiagnosticReport},

		routeSpec{method: http.MethodGet, path: "/ImagingStudy", typ: "ImagingStudy", interaction: interactionSearch, search: imagingStudyView.searchSpec(s), handler: imagingStudyView.search(s)},
		routeSpec{method: http.MethodGet, path: "/ImagingStudy/:id", typ: "ImagingStudy", interaction: interactionRead, handler: imagingStudyView.read(s)},

		routeSpec{method: http.MethodGet, path: "/Task", typ: "Task", interaction: interactionSearch, search: taskView.searchSpec(s), handler: taskView.search(s)},
		routeSpec{method: http.MethodGet, path: "/Task/:id", typ: "Task", interaction: interactionRead, handler: taskView.read(s)},

		routeSpec{method: http.MethodPost, path: "/Subscription", typ: "Subscription", interaction: interactionCreate, withStore: true, handler: s.createSubscription},
		routeSpec{method: http.MethodGet, path: "/Subscription", typ: "Subscription", interaction: interactionSearch, search: &subscriptionSearch, withStore: true, handler: s.searchSubscriptions},
		routeSpec{method: http.MethodGet, path: "/Subscription/:id", typ: "Subscription", interaction: interactionRead, withStore: true, handler: s.readSubscription},
		routeSpec{method: http.MethodDelete, path: "/Subscription/:id", typ: "Subscription", interaction: interactionDelete, withStore: true, handler: s.deleteSubscription},
		routeSpec{method: http.MethodGet, path: "/Subscription/:id/$status", typ: "Subscription", interaction: interactionQuery, withStore: true, operation: &subscriptionStatusOperation, handler: s.subscriptionStatus},
		routeSpec{method: http.MethodGet, path: "/Subscription/:id/$events", typ: "Subscription", interaction: interactionQuery, withStore: true, operation: &subscriptionEventsOperation, handler: s.subscriptionEvents},

		routeSpec{method: http.MethodGet, path: "/AuditEvent", typ: "AuditEvent", interaction: interactionSearch, search: &auditEventSearch, withStore: true, handler: s.searchAuditEvents},
		routeSpec{method: http.MethodGet, path: "/AuditEvent/:id", typ: "AuditEvent", interaction: interactionRead, withStore: true, handler: s.readAuditEvent},
	)
}

// served is the part of the table this server serves (store routes only
// with a store).
func (s *Server) served() []routeSpec {
	var out []routeSpec
	for _, r := range s.routeTable() {
		if r.withStore && s.cfg.Store == nil {
			continue
		}
		out = append(out, r)
	}
	return out
}

// registerFHIR registers the served routes on the FHIR base groups, keeps
// them for the CapabilityStatement, and indexes them for lookupRoute.
func (s *Server) registerFHIR(fhirBase, negotiated *gin.RouterGroup) {
	s.table = s.served()
	s.specs = make(map[string]*routeSpec, len(s.table))
	for i := range s.table {
		r := &s.table[i]
		g := negotiated
		if r.raw {
			g = fhirBase
		}
		g.Handle(r.method, r.path, s.handle(r.handler))
		s.specs[r.method+" "+r.fullPath()] = r
	}
}

// lookupRoute finds the spec of the request's route, nil when no FHIR
// route matched (a 404 follows) or, by mistake, the route is not in the
// table (authenticate denies it). The domain middleware calls it once per
// request; everything after reads it with routeOf.
func (s *Server) lookupRoute(c *gin.Context) *routeSpec {
	return s.specs[c.Request.Method+" "+c.FullPath()]
}

// routeOf returns the request's route spec, as the domain middleware
// found it.
func routeOf(c *gin.Context) *routeSpec { return state(c).route }
