// Package qubssim is an in-memory simulator of the QUBS Integrations API (v1)
// and of its OAuth2 token endpoint, speaking the exact wire format of the
// types in package qubs.
//
// QUBS has no sandbox, so the simulator is the backend of the demo, the
// target of the project's tests and a tool partners can develop against. It
// enforces every rule of the QUBS documentation
// (shared/qubs-integrations-api-v1.txt); where the documentation is silent or
// inconsistent the choice made is commented at the place it is implemented
// and listed in docs/qubs-api-notes.md.
//
// It is NOT for production: it keeps everything in memory, its admin
// endpoints need no credentials and it hands out data to anyone who knows
// the default client credentials.
//
// # Routes
//
//	POST /oauth2/token                                            client_credentials and refresh_token grants
//	GET  /integrations/v1/{domain}/reporting/appointments/pending                       ?pageSize&nextToken
//	GET  /integrations/v1/{domain}/reporting/appointments/{appointmentId}
//	GET  /integrations/v1/{domain}/reporting/appointments/{appointmentId}/attachments   ?urlTtlSeconds&disposition
//	GET  /integrations/v1/{domain}/reporting/appointments/{appointmentId}/attachments/{attachmentGuid}
//	GET  /integrations/v1/{domain}/reporting/appointments/{appointmentId}/comments
//	GET  /integrations/v1/{domain}/reporting/appointments/{appointmentId}/comments/{commentGuid}
//	POST /integrations/v1/{domain}/reporting/appointments/{appointmentId}/comments
//	POST /integrations/v1/{domain}/reporting/appointments/{appointmentId}/report
//	POST /integrations/v1/{domain}/reporting/appointments/{appointmentId}/report/attachments
//	GET  /presigned/download/{token}                               presigned attachment download (no bearer token)
//	PUT  /presigned/upload/{token}                                 presigned report artifact upload (no bearer token)
//	GET  /_sim/inspect                                             admin: what the simulator received
//	GET|POST|DELETE /_sim/faults                                   admin: list, add, clear faults
//	POST /_sim/comments                                            admin: a comment added in QUBS by someone else
//
// # Behaviour worth knowing
//
// Paging follows DynamoDB semantics, which the documentation's
// "DDB_NEXT_TOKEN" example points to: a page examines up to pageSize
// appointments of the domain in a keyed-hash order and returns those that
// are PENDING REPORTING, so a page may hold fewer than pageSize items (even
// none) and still carry a nextToken; a page that examined pageSize entries
// always carries one, so a walk can end with an empty page. The last page
// has "nextToken": null. Clients must stop only when nextToken is empty,
// null or absent, as the documentation says.
//
// Errors of the API are RFC 7807 problems (application/problem+json) with a
// requestId; the token endpoint answers RFC 6749 errors; the presigned URLs
// answer S3-style XML errors, as the object store behind real presigned URLs
// does. Every response carries X-Correlation-Id.
//
// Faults (Sim.AddFault) inject latency, error statuses with Retry-After,
// dropped connections, and lost responses (AfterHandling) whose effects are
// committed, for retry and idempotency tests. Note that Go's http.Transport
// silently retries a request that failed on a reused keep-alive connection
// when the request is a GET or carries an Idempotency-Key header, so a
// dropped connection may be invisible to a Go client unless it disables
// keep-alives.
package qubssim
