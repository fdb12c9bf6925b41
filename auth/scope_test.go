package auth_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
)

func TestParseScopes(t *testing.T) {
	cases := []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "v2", in: "system/ServiceRequest.rs system/DiagnosticReport.cu", want: "system/ServiceRequest.rs system/DiagnosticReport.cu"},
		{name: "v1 read", in: "system/*.read", want: "system/*.rs"},
		{name: "v1 write", in: "user/Patient.write", want: "user/Patient.cud"},
		{name: "v1 star", in: "system/*.*", want: "system/*.cruds"},
		{name: "merged", in: "system/Flag.r system/Flag.s system/Flag.read", want: "system/Flag.rs"},
		{name: "ignored non-resource scopes", in: "openid fhirUser launch launch/patient offline_access online_access", want: ""},
		{name: "other prefixes ignored", in: "api://x/.default qubs/admin", want: ""},
		{name: "fine-grained ignored, not widened", in: "patient/Observation.rs?category=laboratory system/Flag.r", want: "system/Flag.r"},
		{name: "extra whitespace", in: "  system/Flag.r \t system/Binary.r ", want: "system/Flag.r system/Binary.r"},
		{name: "empty", in: "", want: ""},
		{name: "perms out of order", in: "system/Flag.sr", wantErr: true},
		{name: "perms repeated", in: "system/Flag.rr", wantErr: true},
		{name: "unknown perm", in: "system/Flag.x", wantErr: true},
		{name: "empty perms", in: "system/Flag.", wantErr: true},
		{name: "no perms", in: "system/Flag", wantErr: true},
		{name: "lower-case type", in: "system/flag.r", wantErr: true},
		{name: "empty type", in: "system/.r", wantErr: true},
		{name: "v1 unknown", in: "system/*.readwrite", wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := auth.ParseScopes(c.in)
			if c.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.want, auth.FormatScopes(got))
		})
	}
}

func TestIntersectScopes(t *testing.T) {
	cases := []struct{ name, a, b, want string }{
		{"same", "system/Flag.rs", "system/Flag.rs", "system/Flag.rs"},
		{"perms narrowed", "system/DiagnosticReport.cruds", "system/DiagnosticReport.cu", "system/DiagnosticReport.cu"},
		{"wildcard requested", "system/*.rs", "system/ServiceRequest.rs system/DiagnosticReport.cu", "system/ServiceRequest.rs"},
		{"wildcard registered", "system/Flag.read", "system/*.*", "system/Flag.rs"},
		{"context differs", "user/Flag.r", "system/Flag.r", ""},
		{"type differs", "system/Flag.r", "system/Binary.r", ""},
		{"nothing common", "system/Flag.c", "system/Flag.r", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := auth.ParseScopes(c.a)
			require.NoError(t, err)
			b, err := auth.ParseScopes(c.b)
			require.NoError(t, err)
			assert.Equal(t, c.want, auth.FormatScopes(auth.IntersectScopes(a, b)))
		})
	}
}

func TestPrincipalChecks(t *testing.T) {
	scopes := func(s string) []auth.Scope {
		sc, err := auth.ParseScopes(s)
		require.NoError(t, err)
		return sc
	}
	p := &auth.Principal{Method: "jwt", Domains: []string{"acme"}, Scopes: scopes("system/ServiceRequest.rs user/DiagnosticReport.cu patient/*.cruds")}
	cases := []struct {
		name     string
		p        *auth.Principal
		domain   string
		resource string
		perm     byte
		want     bool
	}{
		{"read allowed", p, "acme", "ServiceRequest", 'r', true},
		{"search allowed", p, "acme", "ServiceRequest", 's', true},
		{"create not granted", p, "acme", "ServiceRequest", 'c', false},
		{"user scope honoured", p, "acme", "DiagnosticReport", 'c', true},
		{"patient scope grants nothing", p, "acme", "Patient", 'r', false},
		{"other domain", p, "beta", "ServiceRequest", 'r', false},
		{"empty domain", p, "", "ServiceRequest", 'r', false},
		{"bad perm", p, "acme", "ServiceRequest", 'x', false},
		{"anonymous everything", auth.Anonymous(), "any", "Binary", 'd', true},
		{"nil principal", nil, "acme", "ServiceRequest", 'r', false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.p.CanDomain(c.domain) && c.p.Allows(c.resource, c.perm)
			assert.Equal(t, c.want, got)
			if c.p == nil {
				return
			}
			err := c.p.CheckDomain(c.domain)
			if err == nil {
				err = c.p.Check(c.resource, c.perm)
			}
			if c.want {
				assert.NoError(t, err)
				return
			}
			var ae *auth.Error
			require.True(t, errors.As(err, &ae))
			assert.Equal(t, 403, ae.Status)
			assert.Equal(t, auth.CodeInsufficientScope, ae.Code)
		})
	}
	t.Run("domain refusal says nothing about the domain", func(t *testing.T) {
		e1, e2 := p.CheckDomain("beta"), p.CheckDomain("no-such-domain")
		assert.Equal(t, e1.Error(), e2.Error())
	})
	t.Run("missing scope named in challenge", func(t *testing.T) {
		var ae *auth.Error
		require.True(t, errors.As(p.Check("Flag", 'r'), &ae))
		assert.Contains(t, ae.WWWAuthenticate(), `scope="system/Flag.r"`)
	})
}

func FuzzParseScopes(f *testing.F) {
	for _, s := range []string{"system/ServiceRequest.rs", "system/*.read", "user/Patient.write patient/*.*", "openid launch", "system/Flag.sr", "system/A.cruds?x=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		scopes, err := auth.ParseScopes(s)
		if err != nil {
			return
		}
		for _, sc := range scopes {
			if sc.Context != "system" && sc.Context != "user" && sc.Context != "patient" {
				t.Fatalf("ParseScopes(%q): context %q", s, sc.Context)
			}
			if sc.Perms == "" || sc.Resource == "" {
				t.Fatalf("ParseScopes(%q): empty field in %+v", s, sc)
			}
		}
		// The canonical form parses back to itself.
		again, err := auth.ParseScopes(auth.FormatScopes(scopes))
		if err != nil {
			t.Fatalf("ParseScopes(FormatScopes(%q)): %v", s, err)
		}
		if auth.FormatScopes(again) != auth.FormatScopes(scopes) {
			t.Fatalf("round trip of %q: %q != %q", s, auth.FormatScopes(again), auth.FormatScopes(scopes))
		}
	})
}

// TestWildcardsDoNotReachTheAuditTrail is the one rule, at the token
// endpoint (auth.IntersectScopes) and the resource server (Allows) alike.
func TestWildcardsDoNotReachTheAuditTrail(t *testing.T) {
	parse := func(s string) []auth.Scope {
		t.Helper()
		sc, err := auth.ParseScopes(s)
		require.NoError(t, err)
		return sc
	}
	t.Run("token endpoint", func(t *testing.T) {
		for _, tc := range []struct{ requested, registered, want string }{
			{"system/AuditEvent.rs", "system/*.rs", ""},
			{"system/*.rs", "system/AuditEvent.rs", ""},
			{"system/*.read", "system/*.cruds", "system/*.rs"},
			{"system/AuditEvent.rs", "system/AuditEvent.rs system/*.rs", "system/AuditEvent.rs"},
			{"user/AuditEvent.r", "user/*.cruds", ""},
			{"system/AuditEvent.rs system/ServiceRequest.rs", "system/*.rs", "system/ServiceRequest.rs"},
		} {
			got := auth.FormatScopes(auth.IntersectScopes(parse(tc.requested), parse(tc.registered)))
			assert.Equal(t, tc.want, got, "%s ∩ %s", tc.requested, tc.registered)
		}
	})
	t.Run("resource server", func(t *testing.T) {
		wild := &auth.Principal{Method: "static", Scopes: parse("system/*.cruds user/*.cruds")}
		assert.False(t, wild.Allows("AuditEvent", 'r'))
		assert.False(t, wild.Allows("AuditEvent", 's'))
		assert.True(t, wild.Allows("ServiceRequest", 's'))
		err := wild.Check("AuditEvent", 's')
		require.Error(t, err)
		assert.Contains(t, err.Error(), "names AuditEvent")
		named := &auth.Principal{Method: "jwt", Scopes: parse("system/AuditEvent.rs")}
		assert.True(t, named.Allows("AuditEvent", 's'))
		assert.False(t, named.Allows("ServiceRequest", 's'))
		assert.True(t, auth.Anonymous().Allows("AuditEvent", 's'), "mode none, loopback only, keeps the audit trail readable")
	})
}
