package server_test

import (
	"context"
	"database/sql"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite/sqlitetest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/worklist"
)

// dateFixture is an appointment a date search test puts in the
// simulator: its site, and its QUBS date and times ("" for none).
type dateFixture struct {
	name, site, date, start, end string
}

// dateSearchEnv is the bridge in one of the three ways it serves worklist
// searches: from the index on SQLite or on PostgreSQL, or by walking QUBS
// (index off). Each runs the same cases, so that the three answer alike.
type dateSearchEnv struct {
	e *env
	// ids are the ServiceRequest ids of the fixtures, by name.
	ids map[string]string
}

var dateSearchModes = []string{"index sqlite", "index postgres", "walk"}

// newDateSearchEnv starts mode with a few seeded appointments and the
// fixtures, in zones (the simulator's site zones when nil).
func newDateSearchEnv(t *testing.T, mode string, zones *mapping.Zones, fixtures []dateFixture) *dateSearchEnv {
	t.Helper()
	opts := []envOption{func(so *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		so.Appointments = 20
		sc.Zones = zones
	}}
	var syncer *worklist.Syncer
	switch mode {
	case "index sqlite":
		opts = append(opts, withStore(t), withIndex(t, &syncer))
	case "index postgres":
		opts = append(opts, withPostgres(t), withIndex(t, &syncer))
	}
	e := newEnv(t, opts...)
	ids := putFixtures(t, e, fixtures)
	if syncer != nil {
		syncIndex(t, syncer, e.sim.Domains()[0])
	}
	return &dateSearchEnv{e: e, ids: ids}
}

// putFixtures puts fixtures in e's simulator and returns their
// ServiceRequest ids by name.
func putFixtures(t *testing.T, e *env, fixtures []dateFixture) map[string]string {
	t.Helper()
	base, _ := withUID(t, e.sim)
	ids := map[string]string{}
	for i, f := range fixtures {
		a := base
		a.AppointmentID = "7700" + strconv.Itoa(100+i)
		a.ScheduledSite = f.site
		a.AppointmentDate, a.StartTime, a.EndTime = optional(f.date), optional(f.start), optional(f.end)
		e.sim.PutAppointment(a)
		id, err := mapping.ServiceRequestID(a.AppointmentID)
		require.NoError(t, err)
		ids[f.name] = id
	}
	return ids
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// find returns the names of the fixtures a search of typ finds, in
// order; a search the bridge does not understand fails the test rather
// than be ignored.
func (d *dateSearchEnv) find(t *testing.T, typ, q string) []string {
	t.Helper()
	names := map[string]string{}
	for n, id := range d.ids {
		names[id] = n
	}
	var found []string
	for u := d.e.base + "/" + typ + "?_count=500&" + q; u != ""; {
		r := do(t, http.MethodGet, u, http.Header{"Prefer": {"handling=strict"}}, nil)
		require.Equal(t, http.StatusOK, r.status, "%s?%s: %s", typ, q, r.body)
		b := r.json(t)
		for _, e := range entries(b, "match") {
			if n, ok := names[resourceOf(e)["id"].(string)]; ok {
				found = append(found, n)
			}
		}
		u = link(b, "next")
	}
	slices.Sort(found)
	return found
}

// siteDayFixtures are dated at sites in three zones: Perth (+08:00),
// Sydney (+11:00 in March) and a site no zone is configured for, which is
// in the default zone, Sydney.
var siteDayFixtures = []dateFixture{
	{"perth day", "Perth Imaging", "2031-03-05", "", ""},
	{"sydney day", "Central Clinic", "2031-03-05", "", ""},
	{"unknown site day", "Nowhere Imaging", "2031-03-05", "", ""},
	// 15:30Z: still the 5th in Perth, already the 6th in Sydney.
	{"perth late", "Perth Imaging", "2031-03-05", "23:30:00", "23:45:00"},
	// March in Perth, April in Sydney.
	{"perth month end", "Perth Imaging", "2031-03-31", "23:30:00", ""},
	// Perth's, spelled otherwise by QUBS: in Perth's zone all the same
	// (mapping.Zones.For ignores case and spaces around), so found as
	// "perth late" is.
	{"perth spelled late", " perth IMAGING", "2031-03-05", "23:30:00", "23:45:00"},
	// No date: no date search finds it, ne and lt included.
	{"no date", "Perth Imaging", "", "", ""},
	// An occurrencePeriod with an end and no start: open into the past.
	// Its ImagingStudy.started is the date alone, Perth's whole day.
	{"open start", "Perth Imaging", "2031-03-05", "", "10:00:00"},
}

// TestDateSearchSiteLocalDays: a date without a time is the whole local
// day (month, year) at each study's own site, in occurrence and started
// searches, with every prefix, served from the index on both stores and by
// the walk of QUBS alike; a value with an offset is an instant wherever
// the study is. An occurrence period without a start extends
// indefinitely into the past (FHIR Period), so lt, le, ne and eb find it
// and eq and sa do not.
func TestDateSearchSiteLocalDays(t *testing.T) {
	const (
		perthDay   = "perth day"
		sydneyDay  = "sydney day"
		unknownDay = "unknown site day"
		perthLate  = "perth late"
		monthEnd   = "perth month end"
		openStart  = "open start"
	)
	cases := []struct {
		value               string
		occurrence, started []string
		occurrenceIndexOnly bool
	}{
		{"2031-03-05", []string{perthDay, perthLate, sydneyDay, unknownDay}, []string{openStart, perthDay, perthLate, sydneyDay, unknownDay}, false},
		{"eq2031-03-05", []string{perthDay, perthLate, sydneyDay, unknownDay}, []string{openStart, perthDay, perthLate, sydneyDay, unknownDay}, false},
		{"lt2031-03-06", []string{openStart, perthDay, perthLate, sydneyDay, unknownDay}, []string{openStart, perthDay, perthLate, sydneyDay, unknownDay}, false},
		{"le2031-03-05", []string{openStart, perthDay, perthLate, sydneyDay, unknownDay}, []string{openStart, perthDay, perthLate, sydneyDay, unknownDay}, false},
		{"ge2031-03-06", []string{monthEnd}, []string{monthEnd}, false},
		{"gt2031-03-05", []string{monthEnd}, []string{monthEnd}, false},
		{"sa2031-03-05", []string{monthEnd}, []string{monthEnd}, false},
		{"eb2031-03-06", []string{openStart, perthDay, perthLate, sydneyDay, unknownDay}, []string{openStart, perthDay, perthLate, sydneyDay, unknownDay}, false},
		{"ne2031-03-05", []string{monthEnd, openStart}, []string{monthEnd}, false},
		{"2031-03", []string{monthEnd, perthDay, perthLate, sydneyDay, unknownDay}, []string{monthEnd, openStart, perthDay, perthLate, sydneyDay, unknownDay}, false},
		{"ge2031-04", nil, nil, false},
		{"2031", []string{monthEnd, perthDay, perthLate, sydneyDay, unknownDay}, []string{monthEnd, openStart, perthDay, perthLate, sydneyDay, unknownDay}, false},
		// Instants: the same range at every site.
		{"ge2031-03-05T15:00:00Z", []string{monthEnd, perthDay, perthLate}, []string{monthEnd, openStart, perthDay, perthLate}, false},
		{"lt2031-03-05T23:00:00+08:00", []string{openStart, perthDay, sydneyDay, unknownDay}, []string{openStart, perthDay, sydneyDay, unknownDay}, false},
	}
	for _, mode := range dateSearchModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			d := newDateSearchEnv(t, mode, nil, siteDayFixtures)
			// "perth spelled late" is wherever "perth late" is.
			spelled := func(names []string) []string {
				if slices.Contains(names, perthLate) {
					return append(slices.Clone(names), "perth spelled late")
				}
				return names
			}
			for _, c := range cases {
				t.Run(c.value, func(t *testing.T) {
					assert.Equal(t, sortedOrNil(spelled(c.occurrence)), d.find(t, "ServiceRequest", query("occurrence", c.value)), "occurrence=%s", c.value)
					assert.Equal(t, sortedOrNil(spelled(c.started)), d.find(t, "ImagingStudy", query("started", c.value)), "started=%s", c.value)
				})
			}
			t.Run("AND and OR", func(t *testing.T) {
				assert.Equal(t, sortedOrNil(spelled([]string{perthDay, perthLate, sydneyDay, unknownDay})),
					d.find(t, "ServiceRequest", query("occurrence", "ge2031-03-05", "occurrence", "lt2031-03-06")))
				assert.Equal(t, []string{openStart, monthEnd},
					d.find(t, "ServiceRequest", query("occurrence", "sa2031-03-05,lt2031-03-05")))
				assert.Equal(t, sortedOrNil(spelled([]string{openStart, perthDay, perthLate, monthEnd, sydneyDay, unknownDay})),
					d.find(t, "ImagingStudy", query("started", "2031-03-05,ge2031-03-06")))
			})
			t.Run("bad values are a 400 OperationOutcome", func(t *testing.T) {
				for _, q := range []string{"ServiceRequest?occurrence=2031-02-30", "ServiceRequest?occurrence=xx2031", "ImagingStudy?started=2031-03-05T25:00",
					"ServiceRequest?" + query("occurrence", "2031-03-05T10:00+25:00")} {
					r := get(t, d.e.base+"/"+q)
					assert.Equal(t, http.StatusBadRequest, r.status, "%s: %s", q, r.body)
					outcome(t, r)
				}
			})
		})
	}
}

func sortedOrNil(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return slices.Sorted(slices.Values(s))
}

// TestDateSearchDaylightSaving: a local time without an offset that
// happens twice (clocks going back) is searched as its first occurrence
// and one that never happens (clocks going forward) with the offset in
// force before the gap, as the mapping reads QUBS's local times, so a
// search for a study's own local time finds it. East and west of UTC,
// where Go's time.Date would pick differently.
func TestDateSearchDaylightSaving(t *testing.T) {
	for _, z := range []struct {
		zone                string
		ambiguous, gap      string // date, local time
		firstOffset, before string // offsets of the first occurrence and before the gap
	}{
		{"Europe/Berlin", "2031-10-26T02:30", "2031-03-30T02:30", "+02:00", "+01:00"},
		{"America/New_York", "2031-11-02T01:30", "2031-03-09T02:30", "-04:00", "-05:00"},
	} {
		for _, mode := range dateSearchModes {
			t.Run(z.zone+" "+mode, func(t *testing.T) {
				t.Parallel()
				zones, err := mapping.NewZones(z.zone, "")
				require.NoError(t, err)
				day := func(v string) string { return v[:10] }
				clock := func(v string) string { return v[11:] + ":00" }
				d := newDateSearchEnv(t, mode, zones, []dateFixture{
					{"ambiguous", "Nowhere Imaging", day(z.ambiguous), clock(z.ambiguous), ""},
					{"gap", "Nowhere Imaging", day(z.gap), clock(z.gap), ""},
				})
				for _, c := range []struct {
					value string
					want  []string
				}{
					{z.ambiguous, []string{"ambiguous"}},
					{z.ambiguous + ":00", []string{"ambiguous"}},
					{z.ambiguous + ":00" + z.firstOffset, []string{"ambiguous"}},
					{"ge" + z.ambiguous, []string{"ambiguous"}},
					{"le" + z.ambiguous, []string{"ambiguous", "gap"}},
					{z.gap, []string{"gap"}},
					{z.gap + ":00" + z.before, []string{"gap"}},
					{"ge" + z.gap, []string{"ambiguous", "gap"}},
					{"lt" + z.gap, nil},
				} {
					assert.Equal(t, c.want, d.find(t, "ServiceRequest", query("occurrence", c.value)), "occurrence=%s", c.value)
					assert.Equal(t, c.want, d.find(t, "ImagingStudy", query("started", c.value)), "started=%s", c.value)
				}
				// The second occurrence of the ambiguous time is another
				// instant: an offset an hour less names it.
				second := strings.Replace(z.ambiguous+":00"+z.firstOffset, z.firstOffset, offsetMinusHour(t, z.firstOffset), 1)
				assert.Empty(t, d.find(t, "ServiceRequest", query("occurrence", second)), "occurrence=%s", second)
			})
		}
	}
}

func offsetMinusHour(t *testing.T, off string) string {
	t.Helper()
	at, err := time.Parse("2006-01-02T15:04:05Z07:00", "2031-01-01T00:00:00"+off)
	require.NoError(t, err)
	_, secs := at.Zone()
	return time.Date(2031, 1, 1, 0, 0, 0, 0, time.FixedZone("", secs-3600)).Format("Z07:00")
}

// TestPatientAndSubjectAreANDed: patient and subject are two parameters,
// so both must hold (R4 search.html#combining), with the index and
// without it.
func TestPatientAndSubjectAreANDed(t *testing.T) {
	for _, mode := range dateSearchModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			d := newDateSearchEnv(t, mode, nil, nil)
			var one, other string
			var ofOne []string
			for _, id := range d.e.sim.PendingIDs("acme") {
				a, _ := d.e.sim.Appointment("acme", id)
				switch {
				case a.PatientID == "":
				case one == "" || a.PatientID == one:
					one = a.PatientID
					sr, err := mapping.ServiceRequestID(id)
					require.NoError(t, err)
					ofOne = append(ofOne, sr)
				case other == "":
					other = a.PatientID
				}
			}
			require.NotEmpty(t, other)
			slices.Sort(ofOne)
			search := func(q string) []string {
				return ids(walkResources(t, d.e.base+"/ServiceRequest?_count=500&"+q))
			}
			assert.Empty(t, search(query("patient", "Patient/"+one, "subject", "Patient/"+other)), "two different patients ANDed")
			assert.Equal(t, ofOne, search(query("patient", one, "subject", "Patient/"+one)))
			assert.Equal(t, ofOne, search(query("patient", one+","+other, "subject", "Patient/"+one)), "OR within, AND across")
			assert.Equal(t, ofOne, search("patient="+url.QueryEscape("Patient/"+one)))
		})
	}
}

// TestDateSearchYear9999: the last day FHIR can write, a placeholder some
// systems use for "unscheduled", is after every other in date searches
// without a time too: its wall-clock end (year 10000) must not sort as
// text before "2031".
func TestDateSearchYear9999(t *testing.T) {
	fixtures := []dateFixture{
		{"last day", "Perth Imaging", "9999-12-31", "", ""},
		{"a day", "Perth Imaging", "2031-03-05", "", ""},
	}
	cases := map[string][]string{
		"9999-12-31":   {"last day"},
		"eq9999":       {"last day"},
		"ge9999":       {"last day"},
		"gt2031-03-05": {"last day"},
		"sa2031-03-05": {"last day"},
		"le2031-03-05": {"a day"},
		"lt9999-12-31": {"a day"},
		"ne9999-12-31": {"a day"},
		"2031-03-05":   {"a day"},
	}
	for _, mode := range dateSearchModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			d := newDateSearchEnv(t, mode, nil, fixtures)
			for value, want := range cases {
				assert.Equal(t, want, d.find(t, "ServiceRequest", query("occurrence", value)), "occurrence=%s", value)
				assert.Equal(t, want, d.find(t, "ImagingStudy", query("started", value)), "started=%s", value)
			}
		})
	}
}

// TestDateSearchOlderRows: a row written before the wall-clock columns
// (row_format 2, as an upgrade finds them until the next walk), or
// rewritten by an older release (its text stale), is found by a date
// without a time by its instants in the default zone, as before; once
// walked again, by its site's day.
func TestDateSearchOlderRows(t *testing.T) {
	t.Parallel()
	path := sqlitetest.Path(t)
	var syncer *worklist.Syncer
	e := newEnv(t, func(so *qubssim.Options, _ *qubs.Config, sc *server.Config) {
		so.Appointments = 20
		st, err := sqlite.Open(context.Background(), path)
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		sc.Store = st
	}, withIndex(t, &syncer))
	d := &dateSearchEnv{e: e, ids: putFixtures(t, e, []dateFixture{
		{"sydney day", "Central Clinic", "2031-03-05", "", ""},
		{"perth late", "Perth Imaging", "2031-03-05", "23:30:00", "23:45:00"},
	})}
	syncIndex(t, syncer, e.sim.Domains()[0])
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(`UPDATE worklist_index SET row_format = 2, occurrence_local_start = NULL, occurrence_local_end = NULL,
		started_local_start = NULL, started_local_end = NULL`)
	require.NoError(t, err)
	// And one an older release rewrote after the study moved from the
	// 4th: its text is of the day before, stale.
	_, err = db.Exec(`UPDATE worklist_index SET occurrence_local_start = '2031-03-04T00:00:00',
		occurrence_local_end = '2031-03-05T00:00:00' WHERE id = ?`, d.ids["sydney day"])
	require.NoError(t, err)
	assert.Empty(t, d.find(t, "ServiceRequest", query("occurrence", "2031-03-04")), "not on its stale day")

	// Sydney's day (the default zone's): the Perth study at 23:30 is on
	// the 6th there, as it was before the columns.
	assert.Equal(t, []string{"sydney day"}, d.find(t, "ServiceRequest", query("occurrence", "2031-03-05")))
	assert.Equal(t, []string{"sydney day"}, d.find(t, "ImagingStudy", query("started", "2031-03-05")))
	syncIndex(t, syncer, e.sim.Domains()[0])
	assert.Equal(t, []string{"perth late", "sydney day"}, d.find(t, "ServiceRequest", query("occurrence", "2031-03-05")), "walked again: each site's day")
}
