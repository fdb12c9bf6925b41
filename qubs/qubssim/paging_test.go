package qubssim_test

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"sort"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// rawPage keeps nextToken's exact representation.
type rawPage struct {
	Items     []json.RawMessage          `json:"items"`
	NextToken json.RawMessage            `json:"nextToken"`
	Other     map[string]json.RawMessage `json:"-"`
}

// walk pages through the pending list and returns the ids in order and the
// number of pages.
func walk(t *testing.T, srv *qubssim.Server, tok, domain string, pageSize int, between func(page int)) ([]string, int) {
	t.Helper()
	var ids []string
	next := ""
	for page := 0; ; page++ {
		q := url.Values{"pageSize": {strconv.Itoa(pageSize)}}
		if next != "" {
			q.Set("nextToken", next)
		}
		resp, body := get(t, srv, tok, apiPath(domain, "/pending?"+q.Encode()))
		var p qubs.AppointmentPage
		requireJSON(t, resp, body, 200, &p)
		require.LessOrEqual(t, len(p.Items), pageSize)
		for _, a := range p.Items {
			assert.Equal(t, qubs.StatusPendingReporting, a.Status)
			assert.Equal(t, domain, a.Domain)
			ids = append(ids, a.AppointmentID)
		}
		if between != nil {
			between(page)
		}
		if !p.More() {
			var raw rawPage
			require.NoError(t, json.Unmarshal(body, &raw))
			assert.Equal(t, "null", string(raw.NextToken), "the last page has nextToken null")
			return ids, page + 1
		}
		next = *p.NextToken
		assert.Equal(t, url.QueryEscape(next), next, "nextToken is URL-safe")
		require.Less(t, page, 10_000)
	}
}

func TestPendingFullWalk(t *testing.T) {
	srv := start(t, qubssim.Options{})
	tok := token(t, srv)
	want := srv.PendingIDs("acme")
	require.GreaterOrEqual(t, len(want), 1000)
	for _, size := range []int{500, 100, 37, 1} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			if size == 1 && testing.Short() {
				t.Skip("a thousand requests")
			}
			ids, pages := walk(t, srv, tok, "acme", size, nil)
			got := append([]string(nil), ids...)
			sort.Strings(got)
			assert.Equal(t, want, got, "every pending appointment exactly once")
			assert.GreaterOrEqual(t, pages, len(want)/size)
			assert.False(t, sort.StringsAreSorted(ids), "order is not by id")
		})
	}
}

func TestPendingOrderIsNotChronological(t *testing.T) {
	srv := start(t, qubssim.Options{})
	tok := token(t, srv)
	resp, body := get(t, srv, tok, apiPath("acme", "/pending?pageSize=200"))
	var p qubs.AppointmentPage
	requireJSON(t, resp, body, 200, &p)
	var dates []string
	for _, a := range p.Items {
		if a.AppointmentDate != nil {
			dates = append(dates, *a.AppointmentDate+" "+strOr(a.StartTime))
		}
	}
	assert.False(t, sort.StringsAreSorted(dates))
}

func strOr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// TestPendingShortPages documents the DynamoDB semantics: pages examine
// pageSize appointments of any status, so they may hold fewer items (even
// none) and still carry a nextToken.
func TestPendingShortPages(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 30})
	tok := token(t, srv)
	ids, pages := walk(t, srv, tok, "acme", 1, nil)
	all := len(srv.AppointmentIDs("acme"))
	assert.Len(t, ids, len(srv.PendingIDs("acme")))
	assert.Equal(t, all+1, pages, "one page per appointment of any status, then an empty last page")
}

func TestPendingSurvivesChangesDuringWalk(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 300})
	tok := token(t, srv)
	before := srv.PendingIDs("acme")
	removed := map[string]bool{}
	ids, _ := walk(t, srv, tok, "acme", 25, func(page int) {
		// Take two appointments out of the worklist on every page and
		// bring in a new one.
		pend := srv.PendingIDs("acme")
		for _, id := range pend[len(pend)-2:] {
			srv.SetStatus("acme", id, qubs.StatusDictated)
			removed[id] = true
		}
		a, _ := srv.Appointment("acme", "A123456")
		a.AppointmentID = "NEW" + strconv.Itoa(page)
		srv.PutAppointment(a)
	})
	seen := map[string]int{}
	for _, id := range ids {
		seen[id]++
		assert.Equal(t, 1, seen[id], "%s listed twice", id)
	}
	for _, id := range before {
		if !removed[id] {
			assert.Equal(t, 1, seen[id], "%s, pending throughout, must be listed", id)
		}
	}
}

func TestPendingParameters(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 300})
	tok := token(t, srv)
	resp, body := get(t, srv, tok, apiPath("acme", "/pending?pageSize=3"))
	var p qubs.AppointmentPage
	requireJSON(t, resp, body, 200, &p)
	require.True(t, p.More())
	good := *p.NextToken
	raw, err := base64.RawURLEncoding.DecodeString(good)
	require.NoError(t, err)
	raw[len(raw)/2] ^= 1
	tampered := base64.RawURLEncoding.EncodeToString(raw)
	otherDomain := func() string {
		resp, body := get(t, srv, tok, apiPath("northside", "/pending?pageSize=1"))
		var p qubs.AppointmentPage
		requireJSON(t, resp, body, 200, &p)
		require.True(t, p.More())
		return *p.NextToken
	}()

	tests := []struct {
		name   string
		query  string
		status int
		items  int // checked when status is 200 and items >= 0
	}{
		{"default page size", "", 200, 100},
		{"min", "pageSize=1", 200, -1},
		{"max", "pageSize=500", 200, -1},
		{"zero", "pageSize=0", 400, 0},
		{"negative", "pageSize=-5", 400, 0},
		{"too big", "pageSize=501", 400, 0},
		{"not an integer", "pageSize=ten", 400, 0},
		{"decimal", "pageSize=1.5", 400, 0},
		{"empty", "pageSize=", 400, 0},
		{"huge", "pageSize=99999999999", 400, 0},
		{"good token", "pageSize=3&nextToken=" + good, 200, -1},
		{"empty token means first page", "nextToken=", 200, 100},
		{"tampered token", "nextToken=" + tampered, 400, 0},
		{"foreign domain token", "nextToken=" + otherDomain, 400, 0},
		{"guessable offset", "nextToken=100", 400, 0},
		{"not base64", "nextToken=%25%25%25", 400, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, srv, tok, apiPath("acme", "/pending?"+tc.query))
			if tc.status != 200 {
				requireProblem(t, resp, body, tc.status)
				return
			}
			var p qubs.AppointmentPage
			requireJSON(t, resp, body, 200, &p)
			if tc.items >= 0 {
				// Short pages are possible (non-pending entries), but the
				// seeded acme has few; allow a little slack.
				assert.InDelta(t, tc.items, len(p.Items), 10)
			}
		})
	}
}

func TestPendingItemsWireFormat(t *testing.T) {
	srv := start(t, qubssim.Options{Appointments: 30})
	tok := token(t, srv)
	a, _ := srv.Appointment("acme", "A123456")
	a.AppointmentID = "EMPTY-ITEMS"
	a.ServiceItems = []qubs.ServiceItem{}
	srv.PutAppointment(a)
	a.AppointmentID = "NO-ITEMS"
	a.ServiceItems = nil
	srv.PutAppointment(a)
	a.AppointmentID = "ODD-ITEM"
	a.ServiceItems = []qubs.ServiceItem{qubs.ServiceItem(`{"itemNumber":"56301","x-unknown":{"nested":[1,2]}}`)}
	srv.PutAppointment(a)

	for id, want := range map[string]string{"EMPTY-ITEMS": `[]`, "NO-ITEMS": ``, "ODD-ITEM": `[{"itemNumber":"56301","x-unknown":{"nested":[1,2]}}]`} {
		resp, body := get(t, srv, tok, apiPath("acme", "/"+id))
		var m map[string]json.RawMessage
		requireJSON(t, resp, body, 200, &m)
		if want == "" {
			assert.NotContains(t, m, "serviceItems")
		} else {
			assert.JSONEq(t, want, string(m["serviceItems"]))
		}
	}
}
