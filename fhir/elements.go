package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/internal/jsonw"
)

// mandatoryElements are the top-level elements of at least cardinality 1
// in R4 for the types the bridge serves: _elements keeps them whatever the
// client asked for, so that a subsetted resource is still valid (R4
// search.html#elements: "servers SHOULD ... return mandatory elements").
var mandatoryElements = map[string][]string{
	"ServiceRequest":    {"status", "intent", "subject"},
	"DiagnosticReport":  {"status", "code"},
	"Communication":     {"status"},
	"Flag":              {"status", "code", "subject"},
	"DocumentReference": {"status", "content"},
	"AuditEvent":        {"type", "recorded", "agent", "source"},
	"Binary":            {"contentType"},
}

// choiceElements are the top-level choice elements ([x]) of the R4 types
// the bridge serves.
var choiceElements = map[string]bool{"occurrence": true, "quantity": true, "asNeeded": true, "effective": true,
	"deceased": true, "multipleBirth": true, "value": true}

var elementNameRE = regexp.MustCompile(`^[a-z][A-Za-z0-9]{0,63}(\[x\])?$`)

// ParseElements reads an _elements value: comma-separated top-level
// element names. Empty means no subsetting.
func ParseElements(v string) ([]string, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	var out []string
	for _, e := range strings.Split(v, ",") {
		e = strings.TrimSpace(e)
		if i := strings.IndexByte(e, '.'); i > 0 {
			// Type-qualified (ServiceRequest.status), as R5 allows:
			// only the element is kept.
			e = e[i+1:]
		}
		if !elementNameRE.MatchString(e) {
			return nil, Errorf(http.StatusBadRequest, "value", "_elements takes top-level element names, comma-separated")
		}
		out = append(out, strings.TrimSuffix(e, "[x]"))
	}
	return out, nil
}

// subsettedTag marks a resource as not whole (R4 search.html#elements).
const subsettedTag = `{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED"}`

// SubsetElements keeps of a resource's JSON its resourceType, id, meta, the
// mandatory elements of its type and the elements asked for, in their
// order, and tags meta SUBSETTED. A body that is not a JSON object is
// returned as it is.
func SubsetElements(resource []byte, elements []string) []byte {
	if len(elements) == 0 {
		return resource
	}
	members, err := jsonw.Members(resource)
	if err != nil {
		return resource
	}
	var typ string
	for _, m := range members {
		if m.Key == "resourceType" {
			_ = json.Unmarshal(m.Value, &typ)
		}
	}
	keep := func(k string) bool {
		if k == "resourceType" || k == "id" || slices.Contains(elements, k) || slices.Contains(mandatoryElements[typ], k) {
			return true
		}
		// A choice element asked for by its name (occurrence, or
		// occurrence[x]) is kept in whichever type it has; only known
		// choice names count, so outcome does not keep outcomeDesc.
		for _, e := range elements {
			if choiceElements[e] && len(k) > len(e) && strings.HasPrefix(k, e) && k[len(e)] >= 'A' && k[len(e)] <= 'Z' {
				return true
			}
		}
		return false
	}
	var b bytes.Buffer
	b.Grow(len(resource))
	b.WriteByte('{')
	wrote, sawMeta := false, false
	write := func(k string, v []byte) {
		if wrote {
			b.WriteByte(',')
		}
		wrote = true
		fmt.Fprintf(&b, "%q:", k)
		b.Write(v)
	}
	for _, m := range members {
		switch {
		case m.Key == "meta":
			sawMeta = true
			write("meta", tagSubsetted(m.Value))
		case keep(m.Key):
			write(m.Key, m.Value)
		}
	}
	if !sawMeta {
		write("meta", []byte(`{"tag":[`+subsettedTag+`]}`))
	}
	b.WriteByte('}')
	return b.Bytes()
}

func tagSubsetted(meta []byte) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(meta, &m) != nil {
		return meta
	}
	var tags []json.RawMessage
	_ = json.Unmarshal(m["tag"], &tags)
	tags = append(tags, json.RawMessage(subsettedTag))
	m["tag"], _ = json.Marshal(tags)
	out, err := json.Marshal(m)
	if err != nil {
		return meta
	}
	return out
}

// SubsetBundle applies SubsetElements to the resources of a searchset's
// match entries; includes and outcomes stay whole, as R4 has _elements
// apply to the matches.
func SubsetBundle(bundle []byte, elements []string) []byte {
	if len(elements) == 0 {
		return bundle
	}
	members, err := jsonw.Members(bundle)
	if err != nil {
		return bundle
	}
	var b bytes.Buffer
	b.Grow(len(bundle))
	b.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:", m.Key)
		if m.Key != "entry" {
			b.Write(m.Value)
			continue
		}
		var entries []map[string]json.RawMessage
		if json.Unmarshal(m.Value, &entries) != nil {
			b.Write(m.Value)
			continue
		}
		b.WriteByte('[')
		for j, e := range entries {
			if j > 0 {
				b.WriteByte(',')
			}
			if bytes.Contains(e["search"], []byte(`"match"`)) {
				e["resource"] = SubsetElements(e["resource"], elements)
			}
			writeEntry(&b, e)
		}
		b.WriteByte(']')
	}
	b.WriteByte('}')
	return b.Bytes()
}

// writeEntry writes an entry's members in the order the Bundle writer
// uses.
func writeEntry(b *bytes.Buffer, e map[string]json.RawMessage) {
	b.WriteByte('{')
	first := true
	for _, k := range []string{"fullUrl", "resource", "search"} {
		v, ok := e[k]
		if !ok {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		fmt.Fprintf(b, "%q:", k)
		b.Write(v)
	}
	b.WriteByte('}')
}
