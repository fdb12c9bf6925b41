package server

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite/sqlitetest"
)

// TestEveryFHIRRouteIsDeclared: no route under the FHIR base exists
// outside the route table, so none escapes the scope check, the audit and
// the CapabilityStatement; and every declared interaction needs a
// permission and is audited unless it is public.
func TestEveryFHIRRouteIsDeclared(t *testing.T) {
	t.Parallel()
	st := sqlitetest.Open(t)
	for name, cfg := range map[string]Config{"read-only": {}, "with store": {Store: st}} {
		t.Run(name, func(t *testing.T) {
			s := New(cfg)
			var fhirRoutes int
			for _, r := range s.engine.Routes() {
				if !strings.HasPrefix(r.Path, fhirBasePattern+"/") {
					continue
				}
				fhirRoutes++
				spec := s.specs[r.Method+" "+r.Path]
				require.NotNil(t, spec, "%s %s is routed but not in the route table", r.Method, r.Path)
				if spec.interaction.public() {
					assert.Empty(t, spec.typ, "%s %s", r.Method, r.Path)
					continue
				}
				assert.NotZero(t, spec.interaction.perm(), "%s %s", r.Method, r.Path)
				assert.NotEmpty(t, spec.interaction.auditAction(), "%s %s", r.Method, r.Path)
				assert.NotEmpty(t, spec.typ, "%s %s", r.Method, r.Path)
				if spec.interaction == interactionSearch {
					assert.NotNil(t, spec.search, "%s %s declares its parameters", r.Method, r.Path)
				}
			}
			assert.Equal(t, len(s.specs), fhirRoutes, "every spec is routed")
		})
	}
}
