package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestDotIDs: "." and ".." are valid FHIR ids ([A-Za-z0-9\-.]{1,64}) that
// no URL path can carry to QUBS (RFC 3986 §5.2.4 removes them). Every
// place an id reaches QUBS answers them as a client's input: 404 for
// reads, 400 or 422 for searches and creates, never a 5xx.
func TestDotIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	for _, id := range []string{".", ".."} {
		for _, path := range []string{
			"/ServiceRequest/" + id, "/Patient/" + id, "/Practitioner/" + id, "/Organization/" + id,
			"/DocumentReference/" + id, "/Communication/" + id, "/Flag/" + id, "/Binary/" + id,
			"/DiagnosticReport/" + id, "/DiagnosticReport/" + id + "/_history/1", "/AuditEvent/" + id,
		} {
			res, body := raw(t, http.MethodGet, e.base+path, nil)
			assert.Equal(t, http.StatusNotFound, res.StatusCode, "GET %s: %s", path, body)
		}
		for _, q := range []string{
			"/ServiceRequest?_id=" + id, "/ServiceRequest?identifier=" + id,
			"/ServiceRequest?identifier=https://qubs.io/appointment-id|" + id,
			"/ServiceRequest?patient=Patient/" + id,
			"/DocumentReference?related=ServiceRequest/" + id, "/DocumentReference?patient=Patient/" + id,
			"/Communication?based-on=ServiceRequest/" + id, "/Communication?patient=Patient/" + id,
			"/Flag?patient=Patient/" + id,
			"/DiagnosticReport?based-on=ServiceRequest/" + id, "/DiagnosticReport?patient=Patient/" + id,
		} {
			res, body := raw(t, http.MethodGet, e.base+q, nil)
			assert.Less(t, res.StatusCode, 500, "GET %s: %s", q, body)
			assert.NotEqual(t, http.StatusNotFound, res.StatusCode, "a search never answers 404: %s", q)
		}
		creates := map[string]any{
			"DiagnosticReport": map[string]any{"resourceType": "DiagnosticReport", "status": "final", "code": map[string]any{"text": "CT"},
				"basedOn": []any{map[string]any{"reference": "ServiceRequest/" + id}}, "conclusion": "x"},
			"Communication": map[string]any{"resourceType": "Communication", "status": "completed",
				"basedOn": []any{map[string]any{"reference": "ServiceRequest/" + id}}, "payload": []any{map[string]any{"contentString": "x"}}},
			"DocumentReference": map[string]any{"resourceType": "DocumentReference", "status": "current",
				"context": map[string]any{"related": []any{map[string]any{"reference": "ServiceRequest/" + id}}},
				"content": []any{map[string]any{"attachment": map[string]any{"contentType": "application/pdf", "data": "JVBERi0xLjQK"}}}},
		}
		for typ, res := range creates {
			b, _ := json.Marshal(res)
			r := do(t, http.MethodPost, e.base+"/"+typ, http.Header{"Content-Type": {"application/fhir+json"}}, strings.NewReader(string(b)))
			assert.Contains(t, []int{http.StatusBadRequest, http.StatusUnprocessableEntity}, r.status, "POST %s basedOn %q: %s", typ, id, r.body)
		}
	}
}
