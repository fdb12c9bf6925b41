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
	t.Parallel()
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
			r := get(t, e.base+"/"+typ+"?"+used+"&made-up=1&_has=nothing&_include=Nope:nothing")
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
			for _, p := range []string{"made-up", "_has", "_include=Nope:nothing"} {
				assert.Contains(t, said, p)
			}
		})
	}
}

// TestElements: _elements subsets every read and the matches of every
// search, keeps what R4 makes mandatory (so the result is still valid, as
// do checks), and tags it SUBSETTED.
func TestElements(t *testing.T) {
	t.Parallel()
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

// TestSortTotalSummary: where the bridge can know a total and an order
// (its own DiagnosticReports, the audit trail), _total, _summary=count and
// _sort are honoured; what cannot be honoured is refused.
func TestSortTotalSummary(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t), noKick())
	h := http.Header{"Content-Type": {"application/fhir+json"}}
	var ids []string
	for i := range 3 {
		_, srID := firstPending(t, e.sim, 40+i)
		r := do(t, http.MethodPost, e.base+"/DiagnosticReport", h, strings.NewReader(string(report{srID: srID, status: "preliminary", text: "Prelim " + phiMarker}.json())))
		require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
		ids = append(ids, r.json(t)["id"].(string))
	}
	// The first report is updated last.
	_, srID := firstPending(t, e.sim, 40)
	r := do(t, http.MethodPut, e.base+"/DiagnosticReport/"+ids[0], h, strings.NewReader(string(report{srID: srID, status: "final", text: "Final " + phiMarker, id: ids[0]}.json())))
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)

	r = get(t, e.base+"/DiagnosticReport?_summary=count")
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.EqualValues(t, 3, r.json(t)["total"])
	assert.Empty(t, entries(r.json(t), "match"))

	r = get(t, e.base+"/DiagnosticReport?_total=accurate&_count=1")
	assert.EqualValues(t, 3, r.json(t)["total"])
	assert.Len(t, entries(r.json(t), "match"), 1)

	order := func(q string) []string {
		t.Helper()
		var got []string
		next := e.base + "/DiagnosticReport?_count=2&" + q
		for next != "" {
			r := get(t, next)
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			for _, m := range entries(r.json(t), "match") {
				got = append(got, resourceOf(m)["id"].(string))
			}
			next = link(r.json(t), "next")
		}
		return got
	}
	assert.Equal(t, []string{ids[1], ids[2], ids[0]}, order("_sort=_lastUpdated"))
	assert.Equal(t, []string{ids[0], ids[2], ids[1]}, order("_sort=-_lastUpdated"))
	assert.Equal(t, ids, order(""), "by creation by default")

	for _, bad := range []string{"_sort=status", "_sort=_lastUpdated,status", "_summary=text", "_total=exact"} {
		r := get(t, e.base+"/DiagnosticReport?"+bad)
		assert.Equal(t, http.StatusBadRequest, r.status, bad)
	}

	r = get(t, e.base+"/AuditEvent?_sort=date&_count=3&_total=accurate")
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var last string
	for _, m := range entries(r.json(t), "match") {
		rec := resourceOf(m)["recorded"].(string)
		assert.LessOrEqual(t, last, rec, "oldest first")
		last = rec
	}
	assert.Greater(t, r.json(t)["total"], float64(3))
}
