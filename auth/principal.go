package auth

import (
	"regexp"
	"slices"
	"strings"
)

// Principal is an authenticated caller: who it is, how it proved it, and
// what it may reach. It never holds the credential itself.
type Principal struct {
	// Subject is the static token name, the JWT sub (or client_id), or the
	// SMART client id; empty for Anonymous.
	Subject string
	// Method is "none", "static", "jwt" or "smart".
	Method string
	// Domains are the QUBS domains the caller may reach; "*" (all) is given
	// only by Anonymous, for mode none.
	Domains []string
	// Scopes are the SMART resource scopes granted.
	Scopes []Scope
	// TokenID is the jti or the static token name, for audit; never the token.
	TokenID string
}

// Anonymous is the principal of mode none: every domain, system/*.cruds and,
// named explicitly as it must be, the audit trail. cmd allows mode none on
// loopback only.
func Anonymous() *Principal {
	return &Principal{
		Method:  "none",
		Domains: []string{"*"},
		Scopes: []Scope{
			{Context: "system", Resource: "*", Perms: allPerms},
			{Context: "system", Resource: "AuditEvent", Perms: "rs"},
		},
	}
}

// CanDomain reports whether the principal may reach the QUBS domain.
func (p *Principal) CanDomain(domain string) bool {
	if p == nil || domain == "" {
		return false
	}
	return slices.Contains(p.Domains, domain) || slices.Contains(p.Domains, "*")
}

// Allows reports whether a scope grants perm ('c', 'r', 'u', 'd' or 's') on
// resourceType. Wildcards do not reach AuditEvent (see explicitOnly).
//
// Only system and user scopes count. patient/ scopes are parsed but grant
// nothing: they limit access to one patient's compartment, and the bridge
// has no patient context to enforce that with, so honouring them would grant
// more than the authorization server meant. user/ scopes are honoured as
// system ones within the principal's domains: the bridge has no per-user
// permission model, the authorization server vouches for the user.
func (p *Principal) Allows(resourceType string, perm byte) bool {
	if p == nil || strings.IndexByte(allPerms, perm) < 0 || resourceType == "" {
		return false
	}
	for _, s := range p.Scopes {
		if s.Context != "system" && s.Context != "user" {
			continue
		}
		if covers(s.Resource, resourceType) && strings.IndexByte(s.Perms, perm) >= 0 {
			return true
		}
	}
	return false
}

// CheckDomain returns nil if the principal may reach domain, else a 403
// insufficient_scope *Error. The server calls it before any lookup, and the
// description is the same whether or not the domain exists, so probing
// another domain's ids tells the caller nothing.
func (p *Principal) CheckDomain(domain string) error {
	if p.CanDomain(domain) {
		return nil
	}
	return &Error{Status: 403, Code: CodeInsufficientScope, Description: "the token does not grant access to this domain"}
}

// Check returns nil if the principal may perform perm on resourceType, else
// a 403 insufficient_scope *Error naming the scope that would allow it
// (RFC 6750 §3 scope attribute).
func (p *Principal) Check(resourceType string, perm byte) error {
	if p.Allows(resourceType, perm) {
		return nil
	}
	need := "system/" + resourceType + "." + string(perm)
	if !validResourceType(resourceType) || strings.IndexByte(allPerms, perm) < 0 {
		need = ""
	}
	desc := "the token does not grant this interaction"
	if explicitOnly[resourceType] {
		desc = "the token has no scope that names " + resourceType + " itself; wildcard scopes do not reach it"
	}
	return &Error{Status: 403, Code: CodeInsufficientScope, Description: desc, Scope: need}
}

// validDomain is the shape of a QUBS domain identifier; the same pattern the
// server accepts in /fhir/{domain}. Domains in configuration and in tokens
// must match it, so that a typo fails loudly instead of granting nothing.
var validDomain = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
