// Package auth authenticates and authorises the clients of the bridge's FHIR
// API. It is framework-neutral (net/http only): the server calls an
// Authenticator for every request, then Principal.CheckDomain before any
// lookup and Principal.Check before each interaction.
//
// Modes (BRIDGE_AUTH):
//
//   - none: Anonymous, all domains, system/*.cruds; cmd allows it on loopback only.
//   - static: opaque bearer tokens whose SHA-256 hashes are listed in a JSON
//     file (NewStatic, HashToken).
//   - jwt: bearer JWTs from an external authorization server, verified
//     against its JWKS (NewJWT).
//   - smart: the bridge is its own SMART Backend Services authorization
//     server (NewSMART), issuing short-lived ES256 access tokens to clients
//     that authenticate with a private_key_jwt assertion.
//
// Every failure is an *Error with an RFC 6750 code and a description that
// never holds a token, a claim value chosen by the caller, or PHI, so it is
// safe to log and to return to the client.
package auth
