package fhir

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Bundle is a searchset Bundle under construction. Entries hold resources
// already marshalled, so handlers can reuse cached JSON.
//
// Each fullUrl appears at most once (R4 bundle.html#bundle-unique): a
// resource both matched and included is sent once, as a match.
type Bundle struct {
	// ID is Bundle.id; empty leaves it out.
	ID string
	// LastUpdated is Bundle.meta.lastUpdated; zero leaves meta out.
	LastUpdated time.Time

	total   *int
	links   []bundleLink
	entries []bundleEntry
	byURL   map[string]int // fullUrl -> index in entries
}

type bundleLink struct {
	Relation string `json:"relation"`
	URL      string `json:"url"`
}

type bundleEntry struct {
	FullURL  string          `json:"fullUrl,omitempty"`
	Resource json.RawMessage `json:"resource"`
	Search   entrySearch     `json:"search"`
}

type entrySearch struct {
	Mode string `json:"mode"`
}

// NewSearchset starts a searchset Bundle. total is the number of matches
// over all pages, or nil when unknown: QUBS does not report one, and R4
// makes Bundle.total optional. LastUpdated is set to now, so a client can
// tell how fresh a worklist page is.
func NewSearchset(total *int) *Bundle {
	b := &Bundle{LastUpdated: time.Now().UTC(), byURL: map[string]int{}}
	if total != nil {
		t := *total
		b.total = &t
	}
	return b
}

// SetLink sets the link with the given relation ("self", "next",
// "previous", "first", "last"), replacing an earlier one.
func (b *Bundle) SetLink(relation, url string) {
	for i := range b.links {
		if b.links[i].Relation == relation {
			b.links[i].URL = url
			return
		}
	}
	b.links = append(b.links, bundleLink{Relation: relation, URL: url})
}

// AddMatch adds a resource that matched the search (search.mode "match").
// If the same fullURL was included earlier, that entry becomes the match.
func (b *Bundle) AddMatch(fullURL string, resource json.RawMessage) {
	if i, ok := b.index(fullURL); ok {
		b.entries[i].Resource = resource
		b.entries[i].Search.Mode = "match"
		return
	}
	b.add(fullURL, resource, "match")
}

// AddInclude adds a resource requested by _include (search.mode "include"),
// unless the Bundle already holds that fullURL.
func (b *Bundle) AddInclude(fullURL string, resource json.RawMessage) {
	if _, ok := b.index(fullURL); ok {
		return
	}
	b.add(fullURL, resource, "include")
}

// AddOutcome adds an OperationOutcome about the search, such as warnings
// about ignored parameters (search.mode "outcome", R4 search.html#errors).
func (b *Bundle) AddOutcome(resource json.RawMessage) {
	b.add("", resource, "outcome")
}

// Len reports the number of entries.
func (b *Bundle) Len() int { return len(b.entries) }

func (b *Bundle) index(fullURL string) (int, bool) {
	if fullURL == "" {
		return 0, false
	}
	i, ok := b.byURL[fullURL]
	return i, ok
}

func (b *Bundle) add(fullURL string, resource json.RawMessage, mode string) {
	if fullURL != "" {
		if b.byURL == nil {
			b.byURL = map[string]int{}
		}
		b.byURL[fullURL] = len(b.entries)
	}
	b.entries = append(b.entries, bundleEntry{FullURL: fullURL, Resource: resource, Search: entrySearch{Mode: mode}})
}

// MarshalJSON writes the Bundle as a FHIR R4 searchset.
func (b *Bundle) MarshalJSON() ([]byte, error) {
	type meta struct {
		LastUpdated string `json:"lastUpdated"`
	}
	out := struct {
		ResourceType string        `json:"resourceType"`
		ID           string        `json:"id,omitempty"`
		Meta         *meta         `json:"meta,omitempty"`
		Type         string        `json:"type"`
		Total        *int          `json:"total,omitempty"`
		Link         []bundleLink  `json:"link,omitempty"`
		Entry        []bundleEntry `json:"entry,omitempty"`
	}{ResourceType: "Bundle", ID: b.ID, Type: "searchset", Total: b.total, Link: b.links, Entry: b.entries}
	if !b.LastUpdated.IsZero() {
		out.Meta = &meta{LastUpdated: b.LastUpdated.UTC().Format("2006-01-02T15:04:05.000Z07:00")}
	}
	return json.Marshal(out)
}

// BaseURL works out the absolute FHIR base "{public}/fhir/{domain}" for
// links and Location headers. publicURL (BRIDGE_PUBLIC_URL) wins when set.
// Otherwise X-Forwarded-Proto and X-Forwarded-Host (first value of each
// when a chain of proxies made them lists) describe what the client used,
// and the request's own TLS state and Host fill in what they leave out.
//
// Forwarded headers can be set by any client that reaches the bridge
// directly, so a deployment that is not behind a proxy it trusts should set
// BRIDGE_PUBLIC_URL. Values that are not a plain scheme or host are ignored
// rather than copied into links.
func BaseURL(r *http.Request, publicURL, domain string) string {
	suffix := "/fhir/" + url.PathEscape(domain)
	if publicURL != "" {
		return strings.TrimRight(publicURL, "/") + suffix
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := strings.ToLower(firstValue(r.Header.Get("X-Forwarded-Proto"))); p == "http" || p == "https" {
		scheme = p
	}
	host := r.Host
	if h := firstValue(r.Header.Get("X-Forwarded-Host")); h != "" && validHost(h) {
		host = h
	}
	return scheme + "://" + host + suffix
}

func firstValue(v string) string {
	v, _, _ = strings.Cut(v, ",")
	return strings.TrimSpace(v)
}

// validHost accepts host[:port] made of the characters hosts and IPv6
// literals use, so a forwarded header cannot smuggle a path, userinfo or
// whitespace into links.
func validHost(h string) bool {
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("-._:[]", c):
		default:
			return false
		}
	}
	return true
}
