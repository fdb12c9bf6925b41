package server

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// conditionalRead gives every successful read an ETag and answers a
// matching If-None-Match with 304 Not Modified (FHIR R4 http.html#cread,
// RFC 9110 §13.1.2), so that a client polling a study or a report sends
// the bridge and QUBS nothing but headers when nothing changed. It reports
// whether it answered.
//
// A handler that knows a version (DiagnosticReport: W/"3") sets its own
// ETag; for everything made from QUBS data, which has no version or
// modification time, the ETag is a hash of the view served, so it changes
// exactly when what the client would see changes. Last-Modified is not
// invented where QUBS gives no time.
func (s *Server) conditionalRead(c *gin.Context, status int, body []byte) bool {
	spec := routeOf(c)
	if status != http.StatusOK || spec == nil || (spec.interaction != interactionRead && spec.interaction != interactionVRead) {
		return false
	}
	h := c.Writer.Header()
	tag := h.Get("ETag")
	if tag == "" {
		sum := sha256.Sum256(body)
		tag = `W/"` + hex.EncodeToString(sum[:12]) + `"`
		h.Set("ETag", tag)
	}
	if inm := c.GetHeader("If-None-Match"); inm != "" && etagMatches(inm, tag) {
		c.Status(http.StatusNotModified)
		return true
	}
	return false
}

// etagMatches applies If-None-Match's weak comparison: "*", or any listed
// tag equal to ours once W/ is set aside.
func etagMatches(header, tag string) bool {
	if strings.TrimSpace(header) == "*" {
		return true
	}
	want := strings.TrimPrefix(tag, "W/")
	for _, t := range strings.Split(header, ",") {
		if strings.TrimPrefix(strings.TrimSpace(t), "W/") == want {
			return true
		}
	}
	return false
}
