package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
)

// write sends v as FHIR JSON in the negotiated content type, indented when
// the client asked for _pretty=true.
func (s *Server) write(c *gin.Context, status int, v any) {
	if b, ok := v.(*fhir.Bundle); ok {
		s.writeBundle(c, status, b)
		return
	}
	body, err := encode(v)
	if err != nil {
		body, status = s.encodeFailed(c, err)
	}
	s.writeRaw(c, status, body)
}

// encodeFailed is the answer when encoding one failed: only a bug gets
// here, every value written is a model type.
func (s *Server) encodeFailed(c *gin.Context, err error) ([]byte, int) {
	s.log.Error("encoding response", "correlation_id", correlationIDOf(c), "error_type", fmt.Sprintf("%T", err))
	return fhir.OutcomeJSON(fhir.Issue{Severity: "error", Code: "exception", Diagnostics: "internal error"}),
		http.StatusInternalServerError
}

// bundleBuffers are the buffers searches encode their Bundles into: a
// worklist page is 200 KB, which allocated anew for every page was a
// fifth of the bytes a page allocates, and garbage collection's work.
var bundleBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBundle keeps a rare huge page's buffer out of the pool.
const maxPooledBundle = 4 << 20

// writeBundle is write for a Bundle, in a pooled buffer: nothing keeps
// the body once writeRaw returns (the response writer copies it).
func (s *Server) writeBundle(c *gin.Context, status int, b *fhir.Bundle) {
	buf := bundleBuffers.Get().(*[]byte)
	body, err := b.AppendJSON((*buf)[:0])
	if err != nil {
		body, status = s.encodeFailed(c, err)
	}
	s.writeRaw(c, status, body)
	if err == nil && cap(body) <= maxPooledBundle {
		*buf = body[:0]
		bundleBuffers.Put(buf)
	}
}

func (s *Server) writeRaw(c *gin.Context, status int, body []byte) {
	if el := c.Query("_elements"); el != "" && status == http.StatusOK {
		// Every read and search answers _elements alike, here rather
		// than in each handler: the cost is paid only when asked.
		elements, err := fhir.ParseElements(el)
		if err != nil {
			s.renderError(c, err)
			return
		}
		if spec := routeOf(c); spec != nil {
			switch spec.interaction {
			case interactionRead, interactionVRead:
				body = fhir.SubsetElements(body, elements)
			case interactionSearch:
				body = fhir.SubsetBundle(body, elements)
			}
		}
	}
	if s.conditionalRead(c, status, body) {
		return
	}
	if c.Query("_pretty") == "true" {
		var buf bytes.Buffer
		if json.Indent(&buf, body, "", "  ") == nil {
			body = buf.Bytes()
		}
	}
	ct := contentTypeOf(c)
	if ct == "" {
		ct = fhir.ContentTypeFHIRJSON + "; charset=utf-8"
	}
	if status == 499 {
		c.Status(status)
		return
	}
	c.Data(status, ct, body)
}

// encode calls a value's own MarshalJSON directly when it has one: the
// samply models and Bundle produce compact JSON already, and json.Marshal
// would re-scan (compact) every byte of it once more per nesting level.
func encode(v any) ([]byte, error) {
	if m, ok := v.(json.Marshaler); ok {
		return m.MarshalJSON()
	}
	return json.Marshal(v)
}
