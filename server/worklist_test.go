package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth/authtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
)

// walk follows next links from the first URL and returns the ServiceRequest
// ids in order, checking every page on the way.
func walk(t *testing.T, first string) (ids []string, pages int) {
	t.Helper()
	next := first
	for next != "" {
		r := get(t, next)
		require.Equal(t, http.StatusOK, r.status, "%s: %s", next, r.body)
		b := r.json(t)
		require.Equal(t, "searchset", b["type"])
		for _, e := range entries(b, "match") {
			res := resourceOf(e)
			require.Equal(t, "ServiceRequest", res["resourceType"])
			ids = append(ids, res["id"].(string))
			require.True(t, strings.HasSuffix(e["fullUrl"].(string), "/ServiceRequest/"+res["id"].(string)))
		}
		next = link(b, "next")
		pages++
		require.Less(t, pages, 2000, "runaway paging")
	}
	return ids, pages
}

func pendingServiceRequestIDs(t *testing.T, sim *qubssim.Server, domain string) []string {
	t.Helper()
	var want []string
	for _, id := range sim.PendingIDs(domain) {
		sr, err := mapping.ServiceRequestID(id)
		require.NoError(t, err)
		want = append(want, sr)
	}
	slices.Sort(want)
	return want
}

// pendingListCalls counts the simulator's pending-list calls so far.
func pendingListCalls(sim *qubssim.Server) int {
	n := 0
	for _, r := range sim.Requests() {
		if r.Route == "GET /integrations/v1/{domain}/reporting/appointments/pending" {
			n++
		}
	}
	return n
}

// TestWorklistWalkSeesEveryAppointmentOnce walks the whole worklist (the
// first 150 pages of one) and requires every pending appointment exactly once, exactly _count matches
// on every page but the last, and at most one QUBS call per bridge page,
// although the simulator's QUBS pages are short (it examines pageSize
// appointments of any status and returns the pending ones).
func TestWorklistWalkSeesEveryAppointmentOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	want := pendingServiceRequestIDs(t, e.sim, "acme")
	require.GreaterOrEqual(t, len(want), 1000, "the seeded worklist must be large enough to mean something")
	total := len(e.sim.AppointmentIDs("acme"))
	require.Greater(t, total, len(want), "some appointments must not be pending, or QUBS pages are never short")

	var order []string // the first walk's ids, as served
	for _, count := range []int{100, 37, 500, 1} {
		t.Run("count "+strconv.Itoa(count), func(t *testing.T) {
			// _count=1 crosses a QUBS page (of two) every other page: its
			// first 150 pages cross 75 of them, and the other thousand
			// pages would tell no more, at ten times the test's time.
			limit := 5000
			if count == 1 {
				limit = 150
			}
			before := pendingListCalls(e.sim)
			var ids []string
			var sizes []int
			next := e.base + "/ServiceRequest?_count=" + strconv.Itoa(count)
			for next != "" && len(sizes) < limit {
				r := get(t, next)
				require.Equal(t, http.StatusOK, r.status, "%s: %s", next, r.body)
				b := r.json(t)
				matches := entries(b, "match")
				sizes = append(sizes, len(matches))
				for _, m := range matches {
					ids = append(ids, resourceOf(m)["id"].(string))
				}
				next = link(b, "next")
			}
			pages := len(sizes)
			calls := pendingListCalls(e.sim) - before
			assert.LessOrEqual(t, calls, pages, "at most one QUBS call per bridge page")
			if order == nil {
				order = ids
			}
			if next != "" {
				require.Equal(t, 1, count, "runaway paging")
				assert.Equal(t, order[:len(ids)], ids, "the same studies in the same order as the walk by 100")
				assert.Equal(t, slices.Repeat([]int{count}, pages), sizes, "_count is honoured exactly")
				return
			}
			got := slices.Clone(ids)
			slices.Sort(got)
			assert.Equal(t, want, got, "each pending appointment exactly once")
			for i, n := range sizes[:pages-1] {
				require.Equal(t, count, n, "page %d of %d: _count is honoured exactly before the last page", i+1, pages)
			}
			assert.LessOrEqual(t, sizes[pages-1], count)
			// The last page may be empty: the rest of the last QUBS page
			// held nothing pending.
			full := (len(want) + count - 1) / count
			assert.Contains(t, []int{full, full + 1}, pages)
			// QUBS pages of 2 × _count (at most 500) each read once (the
			// simulator, like QUBS, may end with an empty page).
			pageSize := min(2*count, 500)
			assert.LessOrEqual(t, calls, (total+pageSize-1)/pageSize+1, "each QUBS page read once")
		})
	}
}

// TestWorklistNextLinkOnAnotherReplica: a next link that reaches a bridge
// that does not hold the rest of the QUBS page (another replica, or a
// restart) re-reads that page and continues exactly where the first
// stopped.
func TestWorklistNextLinkOnAnotherReplica(t *testing.T) {
	e := newEnv(t)
	want := pendingServiceRequestIDs(t, e.sim, "acme")
	// A second bridge over the same QUBS, with the same cursor key.
	client, err := qubs.New(qubs.Config{BaseURL: e.sim.URL, TokenURL: e.sim.TokenURL(), ClientID: qubssim.DefaultClientID,
		ClientSecret: qubssim.DefaultClientSecret, AuthStyle: oauth2.AuthStyleInParams})
	require.NoError(t, err)
	var sites []string
	for site, zone := range e.sim.SiteTimeZones() {
		sites = append(sites, site+"="+zone)
	}
	zones, err := mapping.NewZones("Australia/Sydney", strings.Join(sites, ";"))
	require.NoError(t, err)
	replica := server.New(server.Config{CursorKey: []byte("test cursor key"), Version: "test", QUBS: client, Zones: zones})
	t.Cleanup(func() { require.NoError(t, replica.Close(context.Background())) })
	srv := httptest.NewServer(replica)
	t.Cleanup(srv.Close)
	other := &env{base: srv.URL + "/fhir/acme"}
	before := pendingListCalls(e.sim)

	var ids []string
	n := 0
	for next := e.base + "/ServiceRequest?_count=30"; next != ""; n++ {
		require.Less(t, n, 500, "runaway paging")
		// Every other page through the other replica, same QUBS.
		next = strings.Replace(next, other.base, e.base, 1)
		if n%2 == 1 {
			next = strings.Replace(next, e.base, other.base, 1)
		}
		r := get(t, next)
		require.Equal(t, http.StatusOK, r.status, "%s: %s", next, r.body)
		b := r.json(t)
		for _, m := range entries(b, "match") {
			ids = append(ids, resourceOf(m)["id"].(string))
		}
		next = link(b, "next")
		if next != "" {
			require.Len(t, entries(b, "match"), 30, "page %d", n+1)
		}
	}
	slices.Sort(ids)
	assert.Equal(t, want, ids, "each pending appointment exactly once")
	// Every page after the first starts inside a QUBS page the other
	// replica read: each re-reads it.
	assert.Greater(t, pendingListCalls(e.sim)-before, n, "the rests were not shared")
}

func TestWorklistCountClampedAndDefault(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := get(t, e.base+"/ServiceRequest")
	require.Equal(t, http.StatusOK, r.status)
	n := len(entries(r.json(t), "match"))
	assert.LessOrEqual(t, n, 100, "default page is QUBS's 100")
	assert.Greater(t, n, 50)

	r = get(t, e.base+"/ServiceRequest?_count=5000")
	require.Equal(t, http.StatusOK, r.status)
	n = len(entries(r.json(t), "match"))
	assert.LessOrEqual(t, n, 500, "larger _count is clamped to QUBS's 500")
	assert.Greater(t, n, 100)
}

func TestWorklistInclude(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := get(t, e.base+"/ServiceRequest?"+query("_count", "200",
		"_include", "ServiceRequest:subject", "_include", "ServiceRequest:requester", "_include", "ServiceRequest:performer"))
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	b := r.json(t)

	included := map[string]int{}
	for _, inc := range entries(b, "include") {
		res := resourceOf(inc)
		key := res["resourceType"].(string) + "/" + res["id"].(string)
		included[key]++
		assert.True(t, strings.HasSuffix(inc["fullUrl"].(string), "/"+key))
	}
	for k, n := range included {
		assert.Equal(t, 1, n, "%s included more than once in one page", k)
	}
	var sawRequester, sawPerformer bool
	for _, m := range entries(b, "match") {
		sr := resourceOf(m)
		subj := sr["subject"].(map[string]any)["reference"].(string)
		assert.Contains(t, included, subj, "subject of %s not included", sr["id"])
		if req, ok := sr["requester"].(map[string]any); ok {
			assert.Contains(t, included, req["reference"])
			sawRequester = true
		}
		if perf, ok := sr["performer"].([]any); ok {
			for _, p := range perf {
				assert.Contains(t, included, p.(map[string]any)["reference"])
			}
			sawPerformer = true
		}
	}
	assert.True(t, sawRequester && sawPerformer, "the seeded page should have requesters and performers")

	t.Run("without _include nothing is included", func(t *testing.T) {
		r := get(t, e.base+"/ServiceRequest?_count=50")
		assert.Empty(t, entries(r.json(t), "include"))
	})
}

func TestServiceRequestRead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	apptID := e.sim.PendingIDs("acme")[0]
	id, err := mapping.ServiceRequestID(apptID)
	require.NoError(t, err)

	r := get(t, e.base+"/ServiceRequest/"+id)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.Equal(t, id, r.json(t)["id"])
	assert.True(t, strings.HasPrefix(r.header.Get("Content-Type"), "application/fhir+json"))

	t.Run("unknown is 404", func(t *testing.T) {
		r := get(t, e.base+"/ServiceRequest/no-such-appointment")
		assert.Equal(t, http.StatusNotFound, r.status)
		assert.Contains(t, outcome(t, r), "correlation id")
	})
	t.Run("no longer pending is 404", func(t *testing.T) {
		require.True(t, e.sim.SetStatus("acme", apptID, qubs.StatusAuthorised))
		r := get(t, e.base+"/ServiceRequest/"+id)
		assert.Equal(t, http.StatusNotFound, r.status)
		outcome(t, r)
	})
	t.Run("invalid FHIR id is 404", func(t *testing.T) {
		r := get(t, e.base+"/ServiceRequest/"+url.PathEscape("bad id!"))
		assert.Equal(t, http.StatusNotFound, r.status)
		outcome(t, r)
	})
}

// patientWithSeveral finds a patient with more than one pending appointment.
func patientWithSeveral(t *testing.T, sim *qubssim.Server) (patientID string, srIDs []string) {
	t.Helper()
	byPatient := map[string][]string{}
	for _, id := range sim.PendingIDs("acme") {
		a, ok := sim.Appointment("acme", id)
		require.True(t, ok)
		if a.PatientID == "" {
			continue
		}
		sr, err := mapping.ServiceRequestID(id)
		require.NoError(t, err)
		byPatient[mapping.PatientID(&a)] = append(byPatient[mapping.PatientID(&a)], sr)
	}
	for p, ids := range byPatient {
		if len(ids) > 1 {
			slices.Sort(ids)
			return p, ids
		}
	}
	t.Fatal("the seed has no patient with several pending appointments")
	return "", nil
}

func TestSearchByPatient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pid, want := patientWithSeveral(t, e.sim)
	for _, q := range []string{
		query("patient", pid),
		query("patient", "Patient/"+pid),
		query("subject", "Patient/"+pid),
		query("subject:Patient", pid),
	} {
		t.Run(q, func(t *testing.T) {
			// _count=1 forces the filtered walk to page mid-way through
			// QUBS pages: the next links must not lose results.
			ids, _ := walk(t, e.base+"/ServiceRequest?_count=1&"+q)
			slices.Sort(ids)
			assert.Equal(t, want, ids)
		})
	}
}

func TestSearchByIdentifierAndID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var withUID qubs.Appointment
	for _, id := range e.sim.PendingIDs("acme") {
		a, _ := e.sim.Appointment("acme", id)
		if a.StudyInstanceUID != "" {
			withUID = a
			break
		}
	}
	require.NotEmpty(t, withUID.AppointmentID)
	srID, err := mapping.ServiceRequestID(withUID.AppointmentID)
	require.NoError(t, err)

	cases := []struct {
		name string
		q    string
		want []string
	}{
		{"appointment id", query("identifier", withUID.AppointmentID), []string{srID}},
		{"appointment id with system", query("identifier", mapping.SystemAppointmentID+"|"+withUID.AppointmentID), []string{srID}},
		{"study uid with system", query("identifier", "urn:dicom:uid|urn:oid:"+withUID.StudyInstanceUID), []string{srID}},
		{"study uid without system", query("identifier", "urn:oid:"+withUID.StudyInstanceUID), []string{srID}},
		{"_id", query("_id", srID), []string{srID}},
		{"_id unknown", query("_id", "nope"), nil},
		{"identifier unknown", query("identifier", "urn:dicom:uid|urn:oid:1.2.3.999999"), nil},
		{"_id and other patient", query("_id", srID, "patient", "someone-else"), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ids, _ := walk(t, e.base+"/ServiceRequest?"+tc.q)
			assert.Equal(t, tc.want, ids)
		})
	}
}

func TestSearchByStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(so *qubssim.Options, _ *qubs.Config, _ *server.Config) { so.Appointments = 300 })
	all := pendingServiceRequestIDs(t, e.sim, "acme")
	ids, _ := walk(t, e.base+"/ServiceRequest?_count=500&status=active")
	slices.Sort(ids)
	assert.Equal(t, all, ids)

	ids, _ = walk(t, e.base+"/ServiceRequest?status=completed")
	assert.Empty(t, ids)
}

func TestPostSearch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pid, want := patientWithSeveral(t, e.sim)
	r := do(t, http.MethodPost, e.base+"/ServiceRequest/_search",
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, strings.NewReader(query("patient", pid)))
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var ids []string
	for _, m := range entries(r.json(t), "match") {
		ids = append(ids, resourceOf(m)["id"].(string))
	}
	slices.Sort(ids)
	assert.Equal(t, want, ids)
}

func TestDerivedReads(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := get(t, e.base+"/ServiceRequest?"+query("_count", "50", "_include", "ServiceRequest:subject",
		"_include", "ServiceRequest:requester", "_include", "ServiceRequest:performer"))
	require.Equal(t, http.StatusOK, r.status)
	types := map[string]string{}
	for _, inc := range entries(r.json(t), "include") {
		res := resourceOf(inc)
		types[res["resourceType"].(string)] = res["id"].(string)
	}
	require.Contains(t, types, "Patient")
	require.Contains(t, types, "Practitioner")

	for typ, id := range types {
		t.Run(typ+" from cache", func(t *testing.T) {
			r := get(t, e.base+"/"+typ+"/"+id)
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			assert.Equal(t, id, r.json(t)["id"])
		})
	}

	// A second bridge has seen nothing: it must find the ids by walking
	// the worklist.
	cold := newEnv(t)
	for typ, id := range types {
		t.Run(typ+" by walking", func(t *testing.T) {
			r := get(t, cold.base+"/"+typ+"/"+id)
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			assert.Equal(t, id, r.json(t)["id"])
		})
	}
	t.Run("unknown patient", func(t *testing.T) {
		r := get(t, cold.base+"/Patient/not-a-patient")
		assert.Equal(t, http.StatusNotFound, r.status)
		outcome(t, r)
	})
}

func TestBadSearchParameters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cases := []struct {
		name   string
		q      string
		prefer string
		status int
	}{
		{"non-numeric _count", "_count=abc", "", http.StatusBadRequest},
		{"negative _count", "_count=-1", "", http.StatusBadRequest},
		{"unknown include", "_include=ServiceRequest:encounter", "handling=strict", http.StatusBadRequest},
		{"unknown parameter strict", "foo=bar", "handling=strict", http.StatusBadRequest},
		{"unsupported modifier", "status:not=active", "", http.StatusBadRequest},
		{"tampered cursor", "_cursor=AAAA", "", http.StatusBadRequest},
		{"patient of another type", "subject=Group/1", "", http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.prefer != "" {
				h.Set("Prefer", tc.prefer)
			}
			r := do(t, http.MethodGet, e.base+"/ServiceRequest?"+tc.q, h, nil)
			assert.Equal(t, tc.status, r.status, "%s", r.body)
			outcome(t, r)
		})
	}

	t.Run("unknown parameter lenient is ignored with a warning", func(t *testing.T) {
		r := get(t, e.base+"/ServiceRequest?_count=3&foo=bar")
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		b := r.json(t)
		assert.Len(t, entries(b, "match"), 3)
		require.Len(t, entries(b, "outcome"), 1)
	})

	t.Run("cursor from another search", func(t *testing.T) {
		r := get(t, e.base+"/ServiceRequest?_count=10")
		next := link(r.json(t), "next")
		require.NotEmpty(t, next)
		u, err := url.Parse(next)
		require.NoError(t, err)
		cursor := u.Query().Get("_cursor")
		r = get(t, e.base+"/ServiceRequest?_count=11&_cursor="+url.QueryEscape(cursor))
		assert.Equal(t, http.StatusBadRequest, r.status)
		r = get(t, strings.Replace(e.base, "/acme", "/northside", 1)+"/ServiceRequest?_count=10&_cursor="+url.QueryEscape(cursor))
		assert.Equal(t, http.StatusBadRequest, r.status)
		// Flip one character of the cursor.
		b := []byte(cursor)
		b[len(b)/2] ^= 1
		r = get(t, e.base+"/ServiceRequest?_count=10&_cursor="+url.QueryEscape(string(b)))
		assert.Equal(t, http.StatusBadRequest, r.status)
	})
}

func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	t.Run("QUBS 503 becomes 502 with the requestId", func(t *testing.T) {
		e := newEnv(t)
		e.sim.AddFault(qubssim.Fault{Route: "/pending", Status: http.StatusServiceUnavailable})
		r := get(t, e.base+"/ServiceRequest")
		assert.Equal(t, http.StatusBadGateway, r.status)
		d := outcome(t, r)
		assert.Contains(t, d, "QUBS requestId")
		assert.Contains(t, d, "correlation id")
	})
	t.Run("QUBS 429 beyond retries becomes 503 with Retry-After", func(t *testing.T) {
		e := newEnv(t)
		e.sim.AddFault(qubssim.Fault{Route: "/pending", Status: http.StatusTooManyRequests, RetryAfter: "0"})
		r := get(t, e.base+"/ServiceRequest")
		assert.Equal(t, http.StatusServiceUnavailable, r.status)
		assert.Equal(t, "1", r.header.Get("Retry-After"), "QUBS said 0: the client waits at least a second")
		outcome(t, r)
	})
	t.Run("QUBS's own Retry-After is passed on", func(t *testing.T) {
		e := newEnv(t, func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
			// Shorter than QUBS's wait, so the bridge gives up at once
			// rather than sleeping through it.
			sc.RequestTimeout = 5 * time.Second
		})
		e.sim.AddFault(qubssim.Fault{Route: "/pending", Status: http.StatusTooManyRequests, RetryAfter: "17"})
		r := get(t, e.base+"/ServiceRequest")
		assert.Equal(t, http.StatusServiceUnavailable, r.status)
		assert.Equal(t, "17", r.header.Get("Retry-After"))
	})
	t.Run("a 503 with Retry-After is passed on too", func(t *testing.T) {
		e := newEnv(t, func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
			sc.RequestTimeout = 5 * time.Second
		})
		e.sim.AddFault(qubssim.Fault{Route: "/pending", Status: http.StatusServiceUnavailable, RetryAfter: "12"})
		r := get(t, e.base+"/ServiceRequest")
		assert.Equal(t, http.StatusServiceUnavailable, r.status)
		assert.Equal(t, "12", r.header.Get("Retry-After"))
	})
	t.Run("transient faults are retried away", func(t *testing.T) {
		e := newEnv(t)
		e.sim.AddFault(qubssim.Fault{Route: "/pending", Status: http.StatusInternalServerError, Count: 1})
		e.sim.AddFault(qubssim.Fault{Route: "/pending", Drop: true, Count: 1})
		r := get(t, e.base+"/ServiceRequest?_count=10")
		assert.Equal(t, http.StatusOK, r.status, "%s", r.body)
	})
	t.Run("QUBS refusing the bridge's credentials becomes 502", func(t *testing.T) {
		e := newEnv(t, func(_ *qubssim.Options, qc *qubs.Config, _ *server.Config) { qc.ClientSecret = "wrong" })
		r := get(t, e.base+"/ServiceRequest")
		assert.Equal(t, http.StatusBadGateway, r.status)
		assert.Contains(t, outcome(t, r), "refused the bridge")
	})
	t.Run("a domain outside the bridge's token is no FHIR base", func(t *testing.T) {
		e := newEnv(t, withStore(t), func(so *qubssim.Options, _ *qubs.Config, _ *server.Config) {
			so.Clients = []qubssim.Client{{ID: qubssim.DefaultClientID, Secret: qubssim.DefaultClientSecret, Domains: []string{"acme"}}}
		})
		for _, path := range []string{"/ServiceRequest", "/metadata", "/DiagnosticReport", "/AuditEvent", "/ServiceRequest/x", "/Patient/x"} {
			for _, domain := range []string{"northside", "nope"} {
				r := get(t, strings.Replace(e.base, "/acme", "/"+domain, 1)+path)
				assert.Equal(t, http.StatusNotFound, r.status, "%s %s: %s", domain, path, r.body)
				assert.Contains(t, outcome(t, r), "no FHIR base for this domain")
			}
		}
		r := get(t, e.base+"/metadata")
		assert.Equal(t, http.StatusOK, r.status, "the bridge's own domain stays")
	})
	t.Run("the same under static tokens and JWTs", func(t *testing.T) {
		iss := authtest.NewIssuer(t)
		jwtAuth, err := auth.NewJWT(auth.JWTConfig{JWKSURL: iss.JWKSURL(), Issuer: iss.URL(), Audience: []string{"qubs-fhir-bridge"}})
		require.NoError(t, err)
		jwt := iss.Sign(map[string]any{"iss": iss.URL(), "aud": "qubs-fhir-bridge", "sub": "ris-7", "jti": "d1",
			"exp": time.Now().Add(5 * time.Minute).Unix(), "iat": time.Now().Unix(),
			"scope": "system/*.rs", "qubs_domains": []string{"acme", "nope"}}, "RS256")
		modes := map[string]struct {
			opt envOption
			tok string
		}{
			"static": {withStaticTokens(t, []auth.StaticEntry{{Name: "ris", SHA256: auth.HashToken("domain-token-0123456789abcdef012345"),
				Domains: []string{"acme", "nope"}, Scopes: "system/*.rs"}}), "domain-token-0123456789abcdef012345"},
			"jwt": {func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) { sc.Auth, sc.AuthMode = jwtAuth, "jwt" }, jwt},
		}
		for name, m := range modes {
			e := newEnv(t, withStore(t), m.opt)
			nope := strings.Replace(e.base, "/acme", "/nope", 1)
			for _, path := range []string{"/ServiceRequest", "/metadata", "/DiagnosticReport"} {
				r := do(t, http.MethodGet, nope+path, bearer(m.tok), nil)
				assert.Equal(t, http.StatusNotFound, r.status, "%s %s: %s", name, path, r.body)
			}
			r := do(t, http.MethodGet, strings.Replace(e.base, "/acme", "/northside", 1)+"/ServiceRequest", bearer(m.tok), nil)
			assert.Equal(t, http.StatusForbidden, r.status, "%s: a domain the token does not name is refused before anything is looked up", name)
		}
	})
	t.Run("slow QUBS becomes 504", func(t *testing.T) {
		e := newEnv(t, func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
			sc.RequestTimeout = 300 * time.Millisecond
		})
		e.sim.AddFault(qubssim.Fault{Route: "/pending", Latency: 5 * time.Second})
		r := get(t, e.base+"/ServiceRequest")
		assert.Equal(t, http.StatusGatewayTimeout, r.status, "%s", r.body)
		outcome(t, r)
	})
}

func TestCorrelationIDRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const cid = "test-correlation-0001"
	r := do(t, http.MethodGet, e.base+"/ServiceRequest?_count=2", http.Header{"X-Correlation-Id": {cid}}, nil)
	require.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, cid, r.header.Get("X-Correlation-Id"))
	var seen bool
	for _, rec := range e.sim.Requests() {
		if rec.CorrelationID == cid {
			seen = true
		}
	}
	assert.True(t, seen, "QUBS must receive the client's correlation id")

	r = get(t, e.base+"/ServiceRequest/nope")
	assert.NotEmpty(t, r.header.Get("X-Correlation-Id"), "an id is generated when the client sends none")
	assert.Contains(t, outcome(t, r), r.header.Get("X-Correlation-Id"))
}

func TestHTTPConventions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cases := []struct {
		name, method, path string
		header             http.Header
		status             int
		ctype              string
	}{
		{"xml is not acceptable", "GET", "/metadata", http.Header{"Accept": {"application/fhir+xml"}}, http.StatusNotAcceptable, "application/fhir+json"},
		{"_format=xml is not acceptable", "GET", "/metadata?_format=xml", nil, http.StatusNotAcceptable, "application/fhir+json"},
		{"_format=json", "GET", "/metadata?_format=json", nil, http.StatusOK, ""},
		{"plain json accepted", "GET", "/metadata", http.Header{"Accept": {"application/json"}}, http.StatusOK, "application/json"},
		{"unknown resource", "GET", "/Encounter/1", nil, http.StatusNotFound, "application/fhir+json"},
		{"unknown route", "GET", "/ServiceRequest/1/extra/path", nil, http.StatusNotFound, "application/fhir+json"},
		{"method not allowed", "DELETE", "/ServiceRequest/1", nil, http.StatusMethodNotAllowed, "application/fhir+json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.method, e.base+tc.path, tc.header, nil)
			assert.Equal(t, tc.status, r.status, "%s", r.body)
			if tc.ctype != "" {
				assert.True(t, strings.HasPrefix(r.header.Get("Content-Type"), tc.ctype), r.header.Get("Content-Type"))
			}
			if tc.status >= 400 {
				outcome(t, r)
			}
		})
	}
	t.Run("_pretty indents", func(t *testing.T) {
		r := get(t, e.base+"/metadata?_pretty=true")
		assert.Contains(t, string(r.body), "\n  ")
	})
	t.Run("health", func(t *testing.T) {
		r := get(t, e.srv.URL+"/healthz")
		assert.Equal(t, http.StatusOK, r.status)
		r = get(t, e.srv.URL+"/readyz")
		assert.Equal(t, http.StatusOK, r.status)
	})
	t.Run("not ready without QUBS credentials", func(t *testing.T) {
		bad := newEnv(t, func(_ *qubssim.Options, qc *qubs.Config, _ *server.Config) { qc.ClientSecret = "wrong" })
		r := get(t, bad.srv.URL+"/readyz")
		assert.Equal(t, http.StatusServiceUnavailable, r.status)
	})
	t.Run("not ready when QUBS is down, though a token is cached", func(t *testing.T) {
		e := newEnv(t, func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
			sc.ReadinessInterval = time.Nanosecond // every probe asks QUBS
		})
		require.Equal(t, http.StatusOK, get(t, e.srv.URL+"/readyz").status)
		e.sim.AddFault(qubssim.Fault{Route: "/reporting/appointments/", Status: http.StatusServiceUnavailable})
		r := get(t, e.srv.URL+"/readyz")
		assert.Equal(t, http.StatusServiceUnavailable, r.status, "%s", r.body)
		assert.Contains(t, string(r.body), `"qubs":"unavailable"`)
	})
	t.Run("readiness asks QUBS at most once per interval", func(t *testing.T) {
		e := newEnv(t) // the default interval, ten seconds
		before := len(e.sim.Requests())
		for range 20 {
			require.Equal(t, http.StatusOK, get(t, e.srv.URL+"/readyz").status)
		}
		var api int
		for _, rec := range e.sim.Requests()[before:] {
			if strings.Contains(rec.Path, "/reporting/appointments/") {
				api++
			}
		}
		assert.Equal(t, 1, api, "twenty probes, one QUBS call")
	})
}

func TestLinksHonourPublicURLAndProxies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		sc.TrustedProxies = []string{"127.0.0.1"} // the test client is the proxy
	})
	r := do(t, "GET", e.base+"/ServiceRequest?_count=2", http.Header{"X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"fhir.example.org"}}, nil)
	b := r.json(t)
	assert.True(t, strings.HasPrefix(link(b, "next"), "https://fhir.example.org/fhir/acme/ServiceRequest?"), link(b, "next"))
	assert.True(t, strings.HasPrefix(link(b, "self"), "https://fhir.example.org/fhir/acme/ServiceRequest"))

	pub := newEnv(t, func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		sc.PublicURL = "https://bridge.example.net/base"
	})
	r = do(t, "GET", pub.base+"/ServiceRequest?_count=2", http.Header{"X-Forwarded-Host": {"ignored.example"}}, nil)
	b = r.json(t)
	assert.True(t, strings.HasPrefix(link(b, "next"), "https://bridge.example.net/base/fhir/acme/ServiceRequest?"), link(b, "next"))
	for _, m := range entries(b, "match") {
		assert.True(t, strings.HasPrefix(m["fullUrl"].(string), "https://bridge.example.net/base/fhir/acme/ServiceRequest/"))
	}
}

// interactions returns what a CapabilityStatement advertises, by type.
func interactions(t *testing.T, base string) map[string][]string {
	t.Helper()
	r := get(t, base+"/metadata")
	require.Equal(t, http.StatusOK, r.status)
	cs := r.json(t)
	assert.Equal(t, "CapabilityStatement", cs["resourceType"])
	assert.Equal(t, "4.0.1", cs["fhirVersion"])
	rest := cs["rest"].([]any)[0].(map[string]any)
	got := map[string][]string{}
	for _, res := range rest["resource"].([]any) {
		rm := res.(map[string]any)
		for _, in := range rm["interaction"].([]any) {
			got[rm["type"].(string)] = append(got[rm["type"].(string)], in.(map[string]any)["code"].(string))
		}
	}
	return got
}

// TestCapabilityStatement checks that the CapabilityStatement advertises
// exactly what the routes implement: every advertised interaction is
// routed, and the list is what we mean to offer.
func TestCapabilityStatement(t *testing.T) {
	t.Parallel()
	readOnly := newEnv(t)
	assert.Equal(t, map[string][]string{
		"ServiceRequest":    {"read", "search-type"},
		"Patient":           {"read"},
		"Practitioner":      {"read"},
		"Organization":      {"read"},
		"DocumentReference": {"read", "search-type", "create"},
		"Binary":            {"read"},
		"Communication":     {"read", "search-type", "create"},
		"Flag":              {"read", "search-type"},
		"ImagingStudy":      {"read", "search-type"},
		"Task":              {"read", "search-type"},
	}, interactions(t, readOnly.base), "without a store there are no reports")

	e := newEnv(t, withStore(t))
	got := interactions(t, e.base)
	assert.Equal(t, []string{"read", "vread", "update", "search-type", "create"}, got["DiagnosticReport"])
	assert.Equal(t, []string{"read", "create"}, got["Binary"])
	assert.Equal(t, []string{"read", "delete", "search-type", "create"}, got["Subscription"])

	for typ, ins := range got {
		for _, in := range ins {
			var r *response
			switch in {
			case "read":
				r = get(t, e.base+"/"+typ+"/does-not-exist")
			case "vread":
				r = get(t, e.base+"/"+typ+"/does-not-exist/_history/1")
			case "search-type":
				r = get(t, e.base+"/"+typ)
			case "create":
				r = post(t, e.base+"/"+typ, []byte("{}"), nil)
			case "update":
				r = put(t, e.base+"/"+typ+"/does-not-exist", []byte("{}"), nil)
			case "delete":
				r = do(t, http.MethodDelete, e.base+"/"+typ+"/does-not-exist", nil, nil)
			default:
				t.Errorf("%s: unexpected interaction %s", typ, in)
				continue
			}
			assert.NotEqual(t, http.StatusMethodNotAllowed, r.status, "%s %s", typ, in)
			assert.NotContains(t, string(r.body), "no route", "%s %s is advertised but not routed", typ, in)
		}
	}
}
