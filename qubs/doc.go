// Package qubs is a typed client of the QUBS Integrations API (v1), the
// proprietary partner API of the QUBS radiology practice-management system.
//
// It covers the nine tele-reporting operations under
// /integrations/v1/{domain}/reporting, the OAuth2 client-credentials token
// flow, cursor paging, idempotency keys, RFC 7807 problems, presigned
// uploads and downloads. It knows nothing of FHIR.
//
// The QUBS documentation (shared/qubs-integrations-api-v1.txt) is the only
// authority on QUBS behaviour; where it is silent or inconsistent the choice
// made here is recorded in docs/qubs-api-notes.md and the simulator in
// package qubssim makes the same choice.
//
// Nothing in this package logs request or response bodies, names, dates of
// birth, report text, tokens or secrets.
package qubs
