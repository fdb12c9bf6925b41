package server_test

import (
	"net/http"
	"net/url"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestIndexedRevincludeDocuments: an indexed ServiceRequest page with
// _revinclude=DocumentReference:related carries exactly the documents
// DocumentReference?related= gives for each of its studies, at one QUBS
// call per study on the page.
func TestIndexedRevincludeDocuments(t *testing.T) {
	t.Parallel()
	e, _, _ := indexedEnv(t, 40)
	calls := len(e.sim.Requests())
	r := get(t, e.base+"/ServiceRequest?_count=7&_revinclude=DocumentReference:related")
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.Equal(t, calls+7, len(e.sim.Requests()), "one QUBS call per study on the page")
	b := r.json(t)
	var got, want []string
	for _, en := range entries(b, "include") {
		res := resourceOf(en)
		require.Equal(t, "DocumentReference", res["resourceType"])
		got = append(got, res["id"].(string))
	}
	for _, en := range entries(b, "match") {
		id := resourceOf(en)["id"].(string)
		docs := get(t, e.base+"/DocumentReference?related="+url.QueryEscape("ServiceRequest/"+id))
		require.Equal(t, http.StatusOK, docs.status, "%s", docs.body)
		for _, d := range entries(docs.json(t), "match") {
			want = append(want, resourceOf(d)["id"].(string))
		}
	}
	require.NotEmpty(t, want, "the seed gives studies attachments")
	sort.Strings(got)
	sort.Strings(want)
	assert.Equal(t, want, got)

	// The revinclude is offered, and refused nowhere else.
	cs := get(t, e.base+"/metadata").json(t)
	for _, res := range cs["rest"].([]any)[0].(map[string]any)["resource"].([]any) {
		if rm := res.(map[string]any); rm["type"] == "ServiceRequest" {
			assert.Contains(t, rm["searchRevInclude"], "DocumentReference:related")
		}
	}
}
