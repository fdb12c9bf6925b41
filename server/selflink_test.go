package server_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSelfLinkAndIgnoredParameters: on every searchable type, the self
// link names only what the search used, and an outcome entry names what it
// ignored.
func TestSelfLinkAndIgnoredParameters(t *testing.T) {
	e := newEnv(t, withStore(t))
	_, srID := firstPending(t, e.sim, 0)
	for typ, used := range map[string]string{
		"ServiceRequest":    "_count=2",
		"DocumentReference": "related=ServiceRequest/" + srID,
		"Communication":     "based-on=ServiceRequest/" + srID,
		"Flag":              "patient=Patient/nobody",
		"DiagnosticReport":  "based-on=ServiceRequest/" + srID,
		"AuditEvent":        "_count=2",
	} {
		t.Run(typ, func(t *testing.T) {
			r := get(t, e.base+"/"+typ+"?"+used+"&made-up=1&_sort=nothing&_include=Nope:nothing")
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			b := r.json(t)
			self, err := url.Parse(link(b, "self"))
			require.NoError(t, err)
			assert.True(t, strings.HasSuffix(self.Path, "/"+typ))
			want, _ := url.ParseQuery(used)
			assert.Equal(t, want, self.Query(), "the self link names what was used, nothing else")
			outcomes := entries(b, "outcome")
			require.NotEmpty(t, outcomes, "the ignored parameters are reported")
			var said string
			for _, o := range outcomes {
				for _, is := range resourceOf(o)["issue"].([]any) {
					said += is.(map[string]any)["diagnostics"].(string)
				}
			}
			for _, p := range []string{"made-up", "_sort", "_include=Nope:nothing"} {
				assert.Contains(t, said, p)
			}
		})
	}
}

// TestElements: _elements subsets every read and the matches of every
// search, keeps what R4 makes mandatory (so the result is still valid, as
// do checks), and tags it SUBSETTED.
func TestElements(t *testing.T) {
	e := newEnv(t, withStore(t))
	_, srID := firstPending(t, e.sim, 0)
	subsetted := func(t *testing.T, res map[string]any, want ...string) {
		t.Helper()
		for k := range res {
			assert.Contains(t, append(want, "resourceType", "id", "meta"), k)
		}
		for _, k := range want {
			assert.Contains(t, res, k)
		}
		assert.Contains(t, fmtJSON(res["meta"]), "SUBSETTED")
	}
	r := get(t, e.base+"/ServiceRequest/"+srID+"?_elements=priority,code")
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	subsetted(t, r.json(t), "priority", "code", "status", "intent", "subject")

	r = get(t, e.base+"/ServiceRequest?_count=3&_elements=occurrence&_include=ServiceRequest:subject")
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	b := r.json(t)
	assert.Contains(t, link(b, "self"), "_elements=occurrence", "a used parameter")
	require.Len(t, entries(b, "match"), 3)
	for _, m := range entries(b, "match") {
		subsetted(t, resourceOf(m), "status", "intent", "subject", "occurrencePeriod")
	}
	for _, inc := range entries(b, "include") {
		assert.NotContains(t, fmtJSON(resourceOf(inc)["meta"]), "SUBSETTED", "includes stay whole")
	}

	r = get(t, e.base+"/ServiceRequest/"+srID+"?_elements=no.such.thing!")
	assert.Equal(t, http.StatusBadRequest, r.status)
	r = get(t, e.base+"/AuditEvent?_count=2&_elements=outcome")
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	for _, m := range entries(r.json(t), "match") {
		subsetted(t, resourceOf(m), "outcome", "type", "recorded", "agent", "source")
	}
}

func fmtJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
