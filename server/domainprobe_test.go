package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
)

// TestAnonymousDomainProbesAreBounded: the public routes have no caller to
// charge, so made-up domain names cannot make the bridge spend its QUBS
// quota: their probes share a small budget, past which the public document
// is served without the check.
func TestAnonymousDomainProbesAreBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStaticTokens(t, []auth.StaticEntry{
		{Name: "ris", SHA256: auth.HashToken("probe-token-0123456789abcdef0123456"), Domains: []string{"acme"}, Scopes: "system/*.rs"},
	}))
	before := len(e.sim.Requests())
	start := time.Now()
	codes := map[int]int{}
	for i := range 50 {
		r := get(t, strings.Replace(e.base, "/acme", fmt.Sprintf("/made-up-%d", i), 1)+"/metadata")
		codes[r.status]++
	}
	probes := 0
	for _, rec := range e.sim.Requests()[before:] {
		if strings.Contains(rec.Path, "domain-probe") {
			probes++
		}
	}
	// The budget is a burst of 5 and 1 a second: on a loaded machine the
	// 50 requests may take several seconds, each adding one probe.
	budget := 5 + int(time.Since(start).Seconds()) + 1
	assert.LessOrEqual(t, probes, min(budget, 49), "a budget of a few, not one per name")
	assert.GreaterOrEqual(t, codes[http.StatusNotFound], 5, "within the budget, made-up bases are 404")
	assert.Equal(t, 50, codes[http.StatusNotFound]+codes[http.StatusOK])
	r := get(t, e.base+"/metadata")
	assert.Equal(t, http.StatusOK, r.status, "a known FHIR base is answered from what the bridge knows")
}
