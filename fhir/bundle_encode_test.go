package fhir

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// referenceMarshal is Bundle.MarshalJSON as it was, through encoding/json:
// the one-buffer writer must give the same bytes.
func referenceMarshal(b *Bundle) ([]byte, error) {
	type link struct {
		Relation string `json:"relation"`
		URL      string `json:"url"`
	}
	type search struct {
		Mode string `json:"mode"`
	}
	type entry struct {
		FullURL  string          `json:"fullUrl,omitempty"`
		Resource json.RawMessage `json:"resource"`
		Search   search          `json:"search"`
	}
	type meta struct {
		LastUpdated string `json:"lastUpdated"`
	}
	var links []link
	for _, l := range b.links {
		links = append(links, link(l))
	}
	var entries []entry
	for _, e := range b.entries {
		entries = append(entries, entry{FullURL: e.FullURL, Resource: e.Resource, Search: search{Mode: e.Mode}})
	}
	out := struct {
		ResourceType string  `json:"resourceType"`
		ID           string  `json:"id,omitempty"`
		Meta         *meta   `json:"meta,omitempty"`
		Type         string  `json:"type"`
		Total        *int    `json:"total,omitempty"`
		Link         []link  `json:"link,omitempty"`
		Entry        []entry `json:"entry,omitempty"`
	}{ResourceType: "Bundle", ID: b.ID, Type: "searchset", Total: b.total, Link: links, Entry: entries}
	if !b.LastUpdated.IsZero() {
		out.Meta = &meta{LastUpdated: b.LastUpdated.UTC().Format("2006-01-02T15:04:05.000Z07:00")}
	}
	return json.Marshal(out)
}

// TestBundleMarshalMatchesReference builds random Bundles (odd URLs,
// resources compact or not, with characters encoding/json escapes, null
// resources, repeated fullUrls) and requires the bytes encoding/json wrote.
func TestBundleMarshalMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 2))
	pick := func(vs ...string) string { return vs[rng.IntN(len(vs))] }
	resources := []string{
		`{"resourceType":"Patient","id":"p1"}`,
		`{"resourceType":"Patient", "id":"p2",` + "\n" + `"name":[{"text":"a b"}]}`,
		`{"resourceType":"Patient","id":"p3","name":[{"text":"<b>&</b>"}]}`,
		"{\"resourceType\":\"Patient\",\"id\":\"p4\",\"name\":[{\"text\":\"x\u2028y\"}]}",
		`{"resourceType":"Patient","id":"p5","name":[{"text":"q\"\\ \u003c"}]}`,
		``,
		`{"resourceType":"OperationOutcome","issue":[{"severity":"warning","code":"x","diagnostics":"caf\u00e9 日本"}]}`,
	}
	urls := []string{"", "https://h/fhir/acme/Patient/p1", "https://h/fhir/acme/Patient/p2", "https://h/a?b=1&c=<2>", "http://h/x\u2028"}
	for i := range 2000 {
		var total *int
		if rng.IntN(3) == 0 {
			n := rng.IntN(1000)
			total = &n
		}
		b := NewSearchset(total)
		switch rng.IntN(4) {
		case 0:
			b.LastUpdated = time.Time{}
		case 1:
			b.LastUpdated = time.Date(2026, 1, 2, 3, 4, 5, rng.IntN(1e9), time.FixedZone("", 3600))
		}
		if rng.IntN(2) == 0 {
			b.ID = pick("id-1", "a&b", "")
		}
		for range rng.IntN(3) {
			b.SetLink(pick("self", "next"), pick(urls...))
		}
		for range rng.IntN(8) {
			res := []byte(pick(resources...))
			url := pick(urls...)
			switch rng.IntN(5) {
			case 0:
				b.AddMatch(url, res)
			case 1:
				b.AddInclude(url, res)
			case 2:
				b.AddOutcome(res)
			case 3:
				if json.Valid(res) && jsonCompactEscaped(res) {
					b.AddMatchCompact(url, res)
				}
			case 4:
				if json.Valid(res) && jsonCompactEscaped(res) {
					b.AddIncludeCompact(url, res)
				}
			}
		}
		want, errWant := referenceMarshal(b)
		got, errGot := b.MarshalJSON()
		if errWant != nil {
			require.Error(t, errGot, "bundle %d", i)
			continue
		}
		require.NoError(t, errGot, "bundle %d", i)
		require.Equal(t, string(want), string(got), "bundle %d", i)
	}
}

// jsonCompactEscaped reports whether raw is what json.Marshal would copy
// unchanged, the promise AddMatchCompact's callers make.
func jsonCompactEscaped(raw []byte) bool {
	out, err := json.Marshal(json.RawMessage(raw))
	return err == nil && string(out) == string(raw)
}
