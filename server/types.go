package server

import "slices"

// ResourceTypes are the FHIR resource types the bridge serves when it has
// a store (without one, DiagnosticReport, Binary create and AuditEvent are
// not served), read off the route table. The SMART token endpoint refuses
// scopes for any other type; it is configured before the server exists,
// hence a function of the table rather than of a Server.
var ResourceTypes = func() []string {
	var types []string
	// The handlers are method values of a Server that never serves: only
	// the table's declarations are read.
	for _, r := range (&Server{}).routeTable() {
		if r.typ != "" && !slices.Contains(types, r.typ) {
			types = append(types, r.typ)
		}
	}
	return types
}()
