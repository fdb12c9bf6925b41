package server

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
)

// authenticate establishes who calls (BRIDGE_AUTH), then checks, before
// anything is looked up, that the caller may reach this domain (so probing
// another domain's ids tells it nothing) and that a scope grants the
// interaction. Failures are 401 with a Bearer challenge, or 403, each with
// an OperationOutcome. The CapabilityStatement and the SMART configuration
// are public, as SMART requires.
func (s *Server) authenticate() gin.HandlerFunc {
	return func(c *gin.Context) {
		route := c.FullPath()
		spec := routeOf(c)
		if spec != nil && spec.interaction.public() {
			c.Next()
			return
		}
		p := auth.Anonymous()
		if s.cfg.Auth != nil {
			var err error
			if p, err = s.cfg.Auth.Authenticate(c.Request); err != nil {
				s.refuse(c, err)
				return
			}
		}
		state(c).principal = p
		if err := p.CheckDomain(c.Param("domain")); err != nil {
			s.refuse(c, err)
			return
		}
		if route == "" {
			c.Next() // unknown routes answer 404 below, to authenticated callers only
			return
		}
		if spec == nil || spec.interaction.perm() == 0 {
			// Deny by default: a route that is not in the table (or
			// whose interaction needs no permission yet is not public)
			// is a mistake in the bridge, not the caller's.
			s.log.Error("route outside the route table refused", "correlation_id", correlationIDOf(c), "route", route)
			s.refuse(c, &auth.Error{Status: http.StatusForbidden, Code: auth.CodeInsufficientScope, Description: "this interaction is not granted to anyone"})
			return
		}
		if err := p.Check(spec.typ, spec.interaction.perm()); err != nil {
			s.refuse(c, err)
			return
		}
		c.Next()
	}
}

// refuse answers an authentication or authorization failure. Refusals
// are charged to the caller's address, so that guessing tokens or probing
// domains is throttled like any other traffic.
func (s *Server) refuse(c *gin.Context, err error) {
	if s.throttled(c, "refused:"+c.ClientIP()) {
		return
	}
	var ae *auth.Error
	if !errors.As(err, &ae) {
		s.renderError(c, err)
		c.Abort()
		return
	}
	if ae.Status == http.StatusUnauthorized {
		c.Header("WWW-Authenticate", ae.WWWAuthenticate())
	} else if ae.Code != "" {
		c.Header("WWW-Authenticate", ae.WWWAuthenticate())
	}
	code := "forbidden"
	switch ae.Status {
	case http.StatusUnauthorized:
		code = "login"
	case http.StatusBadRequest:
		code = "invalid"
	}
	s.renderError(c, fhir.Errorf(ae.Status, code, "%s", ae.Description))
	c.Abort()
}

// smartConfiguration publishes the SMART Backend Services discovery
// document under each FHIR base.
func (s *Server) smartConfiguration(c *gin.Context) error {
	if s.cfg.SMART == nil {
		return fhir.Errorf(http.StatusNotFound, "not-found", "this bridge is not a SMART authorization server (BRIDGE_AUTH is not smart)")
	}
	c.JSON(http.StatusOK, auth.SMARTConfiguration(s.cfg.SMARTTokenURL, s.cfg.SMART.ScopesSupported()))
	return nil
}
