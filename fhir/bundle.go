package fhir

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/internal/jsonw"
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
	// MetaExtension is Bundle.meta.extension as a JSON array, written
	// with LastUpdated (the worklist index's freshness); nil for none.
	MetaExtension []byte

	total   *int
	links   []bundleLink
	entries []bundleEntry
	byURL   map[string]int // fullUrl -> index in entries
}

type bundleLink struct {
	Relation string
	URL      string
}

type bundleEntry struct {
	FullURL  string
	Resource json.RawMessage
	Mode     string
	// compact is true when the adder vouched for Resource being compact
	// and escaped as encoding/json would write it: it is copied as is.
	compact bool
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

// SetTotal sets Bundle.total: the number of matches over all pages.
func (b *Bundle) SetTotal(n int) { b.total = &n }

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
	b.addMatch(fullURL, resource, false)
}

// AddMatchCompact is AddMatch for a resource that is compact JSON escaped
// as encoding/json escapes it (the bridge's own encoders write such), so
// the Bundle copies it without scanning it again. The Bundle keeps
// resource: the caller must not change it afterwards.
func (b *Bundle) AddMatchCompact(fullURL string, resource []byte) {
	b.addMatch(fullURL, resource, true)
}

func (b *Bundle) addMatch(fullURL string, resource json.RawMessage, compact bool) {
	if i, ok := b.index(fullURL); ok {
		b.entries[i].Resource = resource
		b.entries[i].Mode = "match"
		b.entries[i].compact = compact
		return
	}
	b.add(fullURL, resource, "match", compact)
}

// AddInclude adds a resource requested by _include (search.mode "include"),
// unless the Bundle already holds that fullURL.
func (b *Bundle) AddInclude(fullURL string, resource json.RawMessage) {
	if _, ok := b.index(fullURL); ok {
		return
	}
	b.add(fullURL, resource, "include", false)
}

// AddIncludeCompact is AddInclude for a resource as AddMatchCompact takes.
func (b *Bundle) AddIncludeCompact(fullURL string, resource []byte) {
	if _, ok := b.index(fullURL); ok {
		return
	}
	b.add(fullURL, resource, "include", true)
}

// AddOutcome adds an OperationOutcome about the search, such as warnings
// about ignored parameters (search.mode "outcome", R4 search.html#errors).
func (b *Bundle) AddOutcome(resource json.RawMessage) {
	b.add("", resource, "outcome", false)
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

func (b *Bundle) add(fullURL string, resource json.RawMessage, mode string, compact bool) {
	if fullURL != "" {
		if b.byURL == nil {
			b.byURL = map[string]int{}
		}
		b.byURL[fullURL] = len(b.entries)
	}
	b.entries = append(b.entries, bundleEntry{FullURL: fullURL, Resource: resource, Mode: mode, compact: compact})
}

// MarshalJSON writes the Bundle as a FHIR R4 searchset: the bytes
// encoding/json would write for it, built in one buffer. Resources are
// copied in as they are when compact (AddMatchCompact, or a quick scan
// finds nothing to compact or escape), else through encoding/json as
// before.
func (b *Bundle) MarshalJSON() ([]byte, error) {
	n := 256
	for i := range b.entries {
		n += len(b.entries[i].FullURL) + len(b.entries[i].Resource) + 64
	}
	for _, l := range b.links {
		n += len(l.URL) + 32
	}
	return b.AppendJSON(make([]byte, 0, n))
}

// AppendJSON appends what MarshalJSON returns to dst, so that a caller can
// reuse one buffer for many Bundles.
func (b *Bundle) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"resourceType":"Bundle"`...)
	if b.ID != "" {
		dst = jsonw.StringField(dst, "id", b.ID)
	}
	if !b.LastUpdated.IsZero() {
		dst = append(dst, `,"meta":{"lastUpdated":"`...)
		dst = b.LastUpdated.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
		dst = append(dst, '"')
		if b.MetaExtension != nil {
			dst = append(append(dst, `,"extension":`...), b.MetaExtension...)
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `,"type":"searchset"`...)
	if b.total != nil {
		dst = strconv.AppendInt(append(dst, `,"total":`...), int64(*b.total), 10)
	}
	if len(b.links) > 0 {
		dst = append(dst, `,"link":[`...)
		for i, l := range b.links {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = jsonw.StringField(append(dst, '{'), "relation", l.Relation)
			dst = append(jsonw.StringField(dst, "url", l.URL), '}')
		}
		dst = append(dst, ']')
	}
	if len(b.entries) > 0 {
		dst = append(dst, `,"entry":[`...)
		for i := range b.entries {
			e := &b.entries[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, '{')
			if e.FullURL != "" {
				dst = jsonw.StringField(dst, "fullUrl", e.FullURL)
			}
			dst = jsonw.Field(dst, "resource")
			switch {
			case e.Resource == nil:
				dst = append(dst, "null"...)
			case e.compact || jsonw.Compact(e.Resource):
				dst = append(dst, e.Resource...)
			default:
				raw, err := json.Marshal(e.Resource)
				if err != nil {
					return nil, fmt.Errorf("bundle entry %d: %w", i, err)
				}
				dst = append(dst, raw...)
			}
			dst = append(jsonw.String(append(dst, `,"search":{"mode":`...), e.Mode), "}}"...)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}'), nil
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
