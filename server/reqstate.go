package server

import (
	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
)

// reqState is what the middleware learns about a request and what its
// handler adds to it, as one typed value. Gin's string-keyed map would let
// a misspelt key or a wrong type pass silently; here the compiler checks
// every use.
type reqState struct {
	correlationID string
	// contentType is the negotiated answer media type ("" before
	// negotiation, or for answers outside it such as Binary).
	contentType string
	// domain is the QUBS domain of the FHIR base, once checked.
	domain string
	// principal is the authenticated caller; nil before authentication
	// or when it failed.
	principal *auth.Principal
	// route is the FHIR route's spec (nil outside the FHIR base or for
	// an unknown route).
	route *routeSpec
	// disclosed is what the answer revealed, reported by the handler
	// that built it, for the audit trail.
	disclosed disclosure
	// auditStored is the status of an answer whose audit record was
	// stored with the write it is about (storeAudited); 0 when none was.
	auditStored int
	// auditPending is the request's place among those that may still
	// queue a record (auditWriter.begin); left once its record is queued
	// or stored with its write.
	auditPending auditPending
}

// disclosure is the resources an answer carried and the patients they are
// about, as "Type/id" references, in the order reported (duplicates are
// removed when the audit record is made).
type disclosure struct {
	entities []string
	patients []string
}

// stateKey is the one key under which the request state lives; an
// unexported type, so nothing else can collide with it.
type stateKey struct{}

// state returns the request's state, creating it on first use.
func state(c *gin.Context) *reqState {
	if v, ok := c.Get(stateKey{}); ok {
		return v.(*reqState)
	}
	st := &reqState{}
	c.Set(stateKey{}, st)
	return st
}

func domainOf(c *gin.Context) string        { return state(c).domain }
func correlationIDOf(c *gin.Context) string { return state(c).correlationID }
func contentTypeOf(c *gin.Context) string   { return state(c).contentType }

func setContentType(c *gin.Context, ct string) { state(c).contentType = ct }

// principalOf returns the authenticated caller, or nil.
func principalOf(c *gin.Context) *auth.Principal { return state(c).principal }

// clientOf names the caller for rate limits and the audit trail: the
// principal's subject, "" for anonymous callers.
func clientOf(c *gin.Context) string {
	if p := principalOf(c); p != nil {
		return p.Subject
	}
	return ""
}

// disclose records that the answer carries entity ("Type/id", or "") about
// patient ("Patient/id", or ""). Handlers call it for every resource they
// put in an answer, so the audit never has to re-read the answer.
func disclose(c *gin.Context, entity, patient string) {
	d := &state(c).disclosed
	if entity != "" {
		d.entities = append(d.entities, entity)
	}
	if patient != "" {
		d.patients = append(d.patients, patient)
	}
}
