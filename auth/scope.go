package auth

import (
	"fmt"
	"slices"
	"strings"
)

// Scope is one SMART on FHIR resource scope, normalised to the v2 form
// context/Resource.perms (for example system/DiagnosticReport.cu).
type Scope struct {
	// Context is system, user or patient.
	Context string
	// Resource is a FHIR resource type, or "*" for all.
	Resource string
	// Perms is a non-empty subset of "cruds" in that order.
	Perms string
}

// String returns the SMART v2 form of the scope.
func (s Scope) String() string { return s.Context + "/" + s.Resource + "." + s.Perms }

// maxScopeString bounds what ParseScopes reads: a scope claim or parameter
// longer than this is an attack or a misconfiguration, not a real grant.
const maxScopeString = 8 << 10

// v1Perms maps SMART v1 permission suffixes to their v2 equivalents (SMART
// App Launch 2.0 §"Scopes for requesting FHIR Resources", v1 compatibility).
var v1Perms = map[string]string{"read": "rs", "write": "cud", "*": "cruds"}

// ParseScopes parses a space-separated scope string. SMART v1 forms
// (system/*.read, .write, .*) are mapped to v2 (rs, cud, cruds). Scopes that
// are not resource scopes (openid, fhirUser, launch, launch/patient,
// offline_access, ...) are ignored. A token that starts like a resource
// scope (system/, user/, patient/) but is malformed is an error, because
// silently dropping it would hide a misconfigured grant.
//
// SMART v2 fine-grained scopes with a query (patient/Observation.rs?category=x)
// are ignored rather than widened: the bridge cannot enforce the query, so
// granting the unrestricted scope would give more than was asked for.
// Duplicates are merged.
func ParseScopes(s string) ([]Scope, error) {
	if len(s) > maxScopeString {
		return nil, fmt.Errorf("scope string longer than %d bytes", maxScopeString)
	}
	var out []Scope
	for _, tok := range strings.Fields(s) {
		ctx, rest, ok := strings.Cut(tok, "/")
		if !ok || (ctx != "system" && ctx != "user" && ctx != "patient") {
			continue
		}
		if strings.Contains(rest, "?") {
			continue
		}
		res, perms, ok := strings.Cut(rest, ".")
		if !ok {
			return nil, fmt.Errorf("malformed scope %q: want context/Resource.perms", clip(tok))
		}
		if res != "*" && !validResourceType(res) {
			return nil, fmt.Errorf("malformed scope %q: resource type", clip(tok))
		}
		if v2, ok := v1Perms[perms]; ok {
			perms = v2
		} else if !validPerms(perms) {
			return nil, fmt.Errorf("malformed scope %q: permissions must be a subset of cruds in that order, or read, write, *", clip(tok))
		}
		out = addScope(out, Scope{Context: ctx, Resource: res, Perms: perms})
	}
	return out, nil
}

// FormatScopes is the inverse of ParseScopes: the v2 forms, space-separated.
func FormatScopes(scopes []Scope) string {
	parts := make([]string, len(scopes))
	for i, s := range scopes {
		parts[i] = s.String()
	}
	return strings.Join(parts, " ")
}

// addScope appends s, merging its permissions into an existing scope of the
// same context and resource so that the list stays short and canonical.
func addScope(list []Scope, s Scope) []Scope {
	for i, have := range list {
		if have.Context == s.Context && have.Resource == s.Resource {
			list[i].Perms = unionPerms(have.Perms, s.Perms)
			return list
		}
	}
	return append(list, s)
}

const allPerms = "cruds"

// validPerms reports whether p is a non-empty subset of "cruds" in order,
// without repeats, as SMART v2 requires.
func validPerms(p string) bool {
	if p == "" {
		return false
	}
	last := -1
	for i := 0; i < len(p); i++ {
		at := strings.IndexByte(allPerms, p[i])
		if at <= last {
			return false
		}
		last = at
	}
	return true
}

func unionPerms(a, b string) string {
	var sb strings.Builder
	for i := 0; i < len(allPerms); i++ {
		c := allPerms[i]
		if strings.IndexByte(a, c) >= 0 || strings.IndexByte(b, c) >= 0 {
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

func intersectPerms(a, b string) string {
	var sb strings.Builder
	for i := 0; i < len(allPerms); i++ {
		c := allPerms[i]
		if strings.IndexByte(a, c) >= 0 && strings.IndexByte(b, c) >= 0 {
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// validResourceType accepts the shape of a FHIR resource type name
// (FHIR R4 §2.1.0: an upper-case letter then letters). Whether the bridge
// serves that type is decided later by Allows, not here.
func validResourceType(s string) bool {
	if s == "" || len(s) > 64 || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// explicitOnly are the resource types no wildcard scope reaches: the audit
// trail records who read which patient, so reading it is a different job
// from reading the worklist, and a registration or token that says
// system/*.rs must not grant it by accident. This is the one rule, used by
// Allows at the resource server and by IntersectScopes at the token
// endpoint alike.
var explicitOnly = map[string]bool{"AuditEvent": true}

// covers reports whether a scope's resource reaches resourceType.
func covers(scopeResource, resourceType string) bool {
	if scopeResource == resourceType {
		return true
	}
	return scopeResource == "*" && !explicitOnly[resourceType]
}

// IntersectScopes returns what both lists grant: for each pair with the same
// context whose resources overlap ("*" overlaps every type), the more
// specific resource with the common permissions. The SMART token endpoint
// grants requested ∩ registered this way. A wildcard on either side does not
// reach the explicit-only types (AuditEvent): both must name them.
func IntersectScopes(a, b []Scope) []Scope {
	var out []Scope
	for _, x := range a {
		for _, y := range b {
			if x.Context != y.Context {
				continue
			}
			res := x.Resource
			switch {
			case x.Resource == y.Resource:
			case x.Resource == "*" && covers(x.Resource, y.Resource):
				res = y.Resource
			case y.Resource == "*" && covers(y.Resource, x.Resource):
			default:
				continue
			}
			if p := intersectPerms(x.Perms, y.Perms); p != "" {
				out = addScope(out, Scope{Context: x.Context, Resource: res, Perms: p})
			}
		}
	}
	return out
}

// clip keeps error messages short when a caller sends a huge scope token.
// Scope strings are configuration or client requests, never PHI.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// sortedScopes returns a copy sorted by string form, for stable output.
func sortedScopes(in []Scope) []Scope {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b Scope) int { return strings.Compare(a.String(), b.String()) })
	return out
}
