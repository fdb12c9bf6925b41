// Package fhir holds the FHIR R4 HTTP conventions the server follows,
// independent of any web framework: content negotiation, OperationOutcome
// and the one error type handlers return, searchset Bundles with absolute
// paging links, search parameter parsing with lenient and strict handling,
// sealed paging cursors, the CapabilityStatement built from what the server
// registers, and strict validation of what clients send.
//
// Resources are built with the samply R4 models
// (github.com/samply/golang-fhir-models); strict validation uses
// github.com/google/fhir/go's jsonformat, which also rejects invalid codes,
// cardinality and primitives that the samply decoder lets through.
//
// PHI: Issue.Details and Error.Error() are free of patient data and safe to
// log; Issue.Diagnostics and Issue.Expression may echo what a client sent and
// belong in responses only.
package fhir
