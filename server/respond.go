package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
)

// write sends v as FHIR JSON in the negotiated content type, indented when
// the client asked for _pretty=true.
func (s *Server) write(c *gin.Context, status int, v any) {
	body, err := encode(v)
	if err != nil {
		// Only a bug gets here: every value written is a model type.
		s.log.Error("encoding response", "correlation_id", correlationIDOf(c), "error_type", fmt.Sprintf("%T", err))
		body = fhir.OutcomeJSON(fhir.Issue{Severity: "error", Code: "exception", Diagnostics: "internal error"})
		status = http.StatusInternalServerError
	}
	s.writeRaw(c, status, body)
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
