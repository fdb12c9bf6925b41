package fhir_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
)

// bundleJSON is the subset of a Bundle the tests look at.
type bundleJSON struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Total        *int   `json:"total"`
	Meta         *struct {
		LastUpdated string `json:"lastUpdated"`
	} `json:"meta"`
	Link []struct {
		Relation string `json:"relation"`
		URL      string `json:"url"`
	} `json:"link"`
	Entry []struct {
		FullURL  string          `json:"fullUrl"`
		Resource json.RawMessage `json:"resource"`
		Search   struct {
			Mode string `json:"mode"`
		} `json:"search"`
	} `json:"entry"`
}

func marshalBundle(t *testing.T, b *fhir.Bundle) ([]byte, bundleJSON) {
	t.Helper()
	raw, err := json.Marshal(b)
	require.NoError(t, err)
	fhirtest.RequireValidR4(t, raw)
	var got bundleJSON
	require.NoError(t, json.Unmarshal(raw, &got))
	return raw, got
}

const (
	base      = "https://fhir.example.org/fhir/acme"
	sr1       = `{"resourceType":"ServiceRequest","id":"a1","status":"active","intent":"order","subject":{"reference":"Patient/p1"}}`
	sr2       = `{"resourceType":"ServiceRequest","id":"a2","status":"active","intent":"order","subject":{"reference":"Patient/p1"}}`
	pat1      = `{"resourceType":"Patient","id":"p1"}`
	pat1Newer = `{"resourceType":"Patient","id":"p1","active":true}`
)

func TestBundle(t *testing.T) {
	type entry struct{ url, mode string }
	cases := []struct {
		name      string
		total     *int
		build     func(b *fhir.Bundle)
		wantLinks map[string]string
		want      []entry
	}{
		{
			name:      "empty searchset",
			build:     func(b *fhir.Bundle) { b.SetLink("self", base+"/ServiceRequest") },
			wantLinks: map[string]string{"self": base + "/ServiceRequest"},
		},
		{
			name:  "total is sent when known",
			total: ptr(2),
			build: func(b *fhir.Bundle) {
				b.AddMatch(base+"/ServiceRequest/a1", json.RawMessage(sr1))
				b.AddMatch(base+"/ServiceRequest/a2", json.RawMessage(sr2))
			},
			want: []entry{{base + "/ServiceRequest/a1", "match"}, {base + "/ServiceRequest/a2", "match"}},
		},
		{
			name: "links replace same relation and keep order",
			build: func(b *fhir.Bundle) {
				b.SetLink("self", base+"/ServiceRequest?_count=1")
				b.SetLink("next", base+"/ServiceRequest?_cursor=old")
				b.SetLink("first", base+"/ServiceRequest?_count=1")
				b.SetLink("next", base+"/ServiceRequest?_cursor=new")
			},
			wantLinks: map[string]string{
				"self":  base + "/ServiceRequest?_count=1",
				"next":  base + "/ServiceRequest?_cursor=new",
				"first": base + "/ServiceRequest?_count=1",
			},
		},
		{
			name: "include shared by two matches appears once",
			build: func(b *fhir.Bundle) {
				b.AddMatch(base+"/ServiceRequest/a1", json.RawMessage(sr1))
				b.AddInclude(base+"/Patient/p1", json.RawMessage(pat1))
				b.AddMatch(base+"/ServiceRequest/a2", json.RawMessage(sr2))
				b.AddInclude(base+"/Patient/p1", json.RawMessage(pat1))
			},
			want: []entry{
				{base + "/ServiceRequest/a1", "match"},
				{base + "/Patient/p1", "include"},
				{base + "/ServiceRequest/a2", "match"},
			},
		},
		{
			name: "include of a match is dropped",
			build: func(b *fhir.Bundle) {
				b.AddMatch(base+"/Patient/p1", json.RawMessage(pat1))
				b.AddInclude(base+"/Patient/p1", json.RawMessage(pat1))
			},
			want: []entry{{base + "/Patient/p1", "match"}},
		},
		{
			name: "match of an earlier include takes its place",
			build: func(b *fhir.Bundle) {
				b.AddInclude(base+"/Patient/p1", json.RawMessage(pat1))
				b.AddMatch(base+"/Patient/p1", json.RawMessage(pat1Newer))
			},
			want: []entry{{base + "/Patient/p1", "match"}},
		},
		{
			name: "outcome entry for ignored parameters",
			build: func(b *fhir.Bundle) {
				b.AddOutcome(fhir.OutcomeJSON(fhir.Issue{Severity: "warning", Code: "not-supported", Diagnostics: "ignored: _sort"}))
				b.AddMatch(base+"/ServiceRequest/a1", json.RawMessage(sr1))
			},
			want: []entry{{"", "outcome"}, {base + "/ServiceRequest/a1", "match"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := fhir.NewSearchset(tc.total)
			tc.build(b)
			_, got := marshalBundle(t, b)
			assert.Equal(t, "Bundle", got.ResourceType)
			assert.Equal(t, "searchset", got.Type)
			assert.Equal(t, tc.total, got.Total)
			require.NotNil(t, got.Meta)
			_, err := time.Parse(time.RFC3339Nano, got.Meta.LastUpdated)
			assert.NoError(t, err)

			links := map[string]string{}
			for _, l := range got.Link {
				_, dup := links[l.Relation]
				assert.False(t, dup, "relation %s twice", l.Relation)
				links[l.Relation] = l.URL
			}
			if tc.wantLinks != nil {
				assert.Equal(t, tc.wantLinks, links)
			}

			var entries []entry
			for _, e := range got.Entry {
				entries = append(entries, entry{e.FullURL, e.Search.Mode})
			}
			assert.Equal(t, tc.want, entries)
			assert.Equal(t, len(tc.want), b.Len())
		})
	}

	t.Run("a later match replaces the included resource", func(t *testing.T) {
		b := fhir.NewSearchset(nil)
		b.AddInclude(base+"/Patient/p1", json.RawMessage(pat1))
		b.AddMatch(base+"/Patient/p1", json.RawMessage(pat1Newer))
		_, got := marshalBundle(t, b)
		require.Len(t, got.Entry, 1)
		assert.JSONEq(t, pat1Newer, string(got.Entry[0].Resource))
	})
	t.Run("total is copied", func(t *testing.T) {
		n := 3
		b := fhir.NewSearchset(&n)
		n = 99
		_, got := marshalBundle(t, b)
		assert.Equal(t, 3, *got.Total)
	})
	t.Run("id and no meta", func(t *testing.T) {
		b := fhir.NewSearchset(nil)
		b.ID = "page-1"
		b.LastUpdated = time.Time{}
		raw, got := marshalBundle(t, b)
		assert.Nil(t, got.Meta)
		assert.Contains(t, string(raw), `"id":"page-1"`)
	})
}

func TestBaseURL(t *testing.T) {
	cases := []struct {
		name      string
		tls       bool
		publicURL string
		domain    string
		header    http.Header
		want      string // {host} is the test server's host:port
	}{
		{name: "request host", domain: "acme", want: "http://{host}/fhir/acme"},
		{name: "request over tls", tls: true, domain: "acme", want: "https://{host}/fhir/acme"},
		{name: "public url wins", publicURL: "https://bridge.example.org/", domain: "acme",
			header: http.Header{"X-Forwarded-Host": {"proxy.example.org"}, "X-Forwarded-Proto": {"http"}},
			want:   "https://bridge.example.org/fhir/acme"},
		{name: "public url with path prefix", publicURL: "https://example.org/qubs", domain: "acme",
			want: "https://example.org/qubs/fhir/acme"},
		{name: "forwarded host and proto", domain: "acme",
			header: http.Header{"X-Forwarded-Host": {"fhir.example.org"}, "X-Forwarded-Proto": {"https"}},
			want:   "https://fhir.example.org/fhir/acme"},
		{name: "first of forwarded lists", domain: "acme",
			header: http.Header{"X-Forwarded-Host": {"outer.example.org, inner.local"}, "X-Forwarded-Proto": {"HTTPS, http"}},
			want:   "https://outer.example.org/fhir/acme"},
		{name: "forwarded proto alone keeps request host", domain: "acme",
			header: http.Header{"X-Forwarded-Proto": {"https"}},
			want:   "https://{host}/fhir/acme"},
		{name: "forwarded host with port", domain: "acme",
			header: http.Header{"X-Forwarded-Host": {"fhir.example.org:8443"}},
			want:   "http://fhir.example.org:8443/fhir/acme"},
		{name: "forwarded http over tls", tls: true, domain: "acme",
			header: http.Header{"X-Forwarded-Proto": {"http"}},
			want:   "http://{host}/fhir/acme"},
		{name: "bogus forwarded values ignored", domain: "acme",
			header: http.Header{"X-Forwarded-Host": {"evil.example/x?y"}, "X-Forwarded-Proto": {"javascript"}},
			want:   "http://{host}/fhir/acme"},
		{name: "domain is path escaped", domain: "a b/c", want: "http://{host}/fhir/a%20b%2Fc"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, fhir.BaseURL(r, tc.publicURL, tc.domain))
			})
			srv := httptest.NewServer(h)
			if tc.tls {
				srv.Close()
				srv = httptest.NewTLSServer(h)
			}
			defer srv.Close()
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/fhir/x/metadata", nil)
			require.NoError(t, err)
			for k, vs := range tc.header {
				req.Header[k] = vs
			}
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			host := strings.TrimPrefix(strings.TrimPrefix(srv.URL, "http://"), "https://")
			assert.Equal(t, strings.ReplaceAll(tc.want, "{host}", host), string(got))
		})
	}
}

func ptr[T any](v T) *T { return &v }
