package worklist_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite/sqlitetest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/worklist"
)

// simClient starts a simulator and a real QUBS client of it.
func simClient(t testing.TB, opts qubssim.Options) (*qubssim.Server, *qubs.Client) {
	t.Helper()
	sim, err := qubssim.Start("127.0.0.1:0", opts)
	require.NoError(t, err)
	t.Cleanup(func() { sim.Close() })
	c, err := qubs.New(qubs.Config{BaseURL: sim.URL, TokenURL: sim.TokenURL(), ClientID: qubssim.DefaultClientID,
		ClientSecret: qubssim.DefaultClientSecret, AuthStyle: oauth2.AuthStyleInParams,
		Retry: qubs.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond}})
	require.NoError(t, err)
	return sim, c
}

func zones(t testing.TB, sim *qubssim.Server) *mapping.Zones {
	var sites []string
	for site, zone := range sim.SiteTimeZones() {
		sites = append(sites, site+"="+zone)
	}
	z, err := mapping.NewZones("Australia/Sydney", strings.Join(sites, ";"))
	require.NoError(t, err)
	return z
}

var engines = map[string]func(t testing.TB) store.Store{
	"sqlite": func(t testing.TB) store.Store {
		return sqlitetest.Open(t)
	},
	"postgres": func(t testing.TB) store.Store { return pgtest.Open(t) },
}

// indexed returns the appointment ids on the index of domain.
func indexed(t testing.TB, st store.Store, domain string) []string {
	t.Helper()
	var ids []string
	q := store.WorklistQuery{Domain: domain, Count: 500}
	for {
		p, err := st.SearchWorklist(context.Background(), q)
		require.NoError(t, err)
		for _, r := range p.Rows {
			ids = append(ids, r.AppointmentID)
		}
		if p.Next == "" {
			break
		}
		q.After = p.Next
	}
	sort.Strings(ids)
	return ids
}

// TestSyncConverges: after arrivals, changes and departures in QUBS (the
// simulator's churn), one walk brings the index back to QUBS, with one
// event per difference.
func TestSyncConverges(t *testing.T) {
	for name, open := range engines {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sim, client := simClient(t, qubssim.Options{Seed: 7, Appointments: 300})
			st := open(t)
			domain := sim.Domains()[0]
			s := &worklist.Syncer{Store: st, QUBS: client, Zones: zones(t, sim), Owner: "r1", PageSize: 100}
			ctx := context.Background()

			res, err := s.SyncOnce(ctx, domain)
			require.NoError(t, err)
			want := sim.PendingIDs(domain)
			assert.Equal(t, len(want), res.Arrived)
			assert.Equal(t, want, indexed(t, st, domain))
			assert.Equal(t, (len(sim.AppointmentIDs(domain))+99)/100, res.Calls, "one QUBS call per page examined")

			res, err = s.SyncOnce(ctx, domain)
			require.NoError(t, err)
			assert.Equal(t, worklist.Result{Seen: len(want), Calls: res.Calls}, res, "nothing changed")

			evs := sim.ChurnStep(40)
			kinds := map[string]map[string]bool{}
			for _, e := range evs {
				if e.Domain == domain {
					if kinds[e.Kind] == nil {
						kinds[e.Kind] = map[string]bool{}
					}
					kinds[e.Kind][e.AppointmentID] = true
				}
			}
			res, err = s.SyncOnce(ctx, domain)
			require.NoError(t, err)
			assert.Equal(t, sim.PendingIDs(domain), indexed(t, st, domain))
			assert.Positive(t, res.Arrived+res.Left+res.Changed)
			// Each row's content is QUBS's.
			p, err := st.SearchWorklist(ctx, store.WorklistQuery{Domain: domain, Count: 1000})
			require.NoError(t, err)
			for _, r := range p.Rows {
				a, _ := sim.Appointment(domain, r.AppointmentID)
				row, err := worklist.Row(domain, &a, s.Zones, time.Now())
				require.NoError(t, err)
				assert.Equal(t, row.Digest, r.Digest, r.AppointmentID)
			}
			// The event log says the same.
			all, err := st.EventsAfter(ctx, 0, 10000)
			require.NoError(t, err)
			got := map[string]int{}
			for _, e := range all[len(want):] {
				got[e.Kind]++
				assert.Equal(t, store.EventTopicWorklist, e.Topic)
				assert.Contains(t, string(e.Resource), `"resourceType":"ServiceRequest"`)
			}
			assert.Equal(t, res.Arrived, got[store.EventArrived])
			assert.Equal(t, res.Changed, got[store.EventChanged])
			assert.Equal(t, res.Left, got[store.EventLeft])
		})
	}
}

// failingPages fails the walk's second page.
type failingPages struct {
	worklist.QUBS
	calls atomic.Int32
}

func (f *failingPages) ListPending(ctx context.Context, domain string, n int, tok string) (*qubs.AppointmentPage, error) {
	if f.calls.Add(1) == 2 {
		return nil, errors.New("QUBS went away")
	}
	return f.QUBS.ListPending(ctx, domain, n, tok)
}

// TestFailedWalkMarksNothingLeft: a walk that fails midway has not seen
// the studies after the failure, and must not take them for gone.
func TestFailedWalkMarksNothingLeft(t *testing.T) {
	t.Parallel()
	sim, client := simClient(t, qubssim.Options{Seed: 3, Appointments: 200})
	st := engines["sqlite"](t)
	domain := sim.Domains()[0]
	s := &worklist.Syncer{Store: st, QUBS: client, Zones: zones(t, sim), Owner: "r1", PageSize: 50}
	ctx := context.Background()
	_, err := s.SyncOnce(ctx, domain)
	require.NoError(t, err)
	before := indexed(t, st, domain)
	require.Greater(t, len(before), 50, "needs two pages")

	gone := before[0]
	sim.SetStatus(domain, gone, "AUTHORISED")
	s.QUBS = &failingPages{QUBS: client}
	_, err = s.SyncOnce(ctx, domain)
	require.Error(t, err)
	assert.Equal(t, before, indexed(t, st, domain), "nothing left on a failed walk")

	s.QUBS = client
	res, err := s.SyncOnce(ctx, domain)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Left)
	assert.NotContains(t, indexed(t, st, domain), gone)
}

// TestRefresh: a read's refresh and a 404 update the index at once.
func TestRefresh(t *testing.T) {
	t.Parallel()
	sim, client := simClient(t, qubssim.Options{Seed: 5, Appointments: 50})
	st := engines["sqlite"](t)
	domain := sim.Domains()[0]
	s := &worklist.Syncer{Store: st, QUBS: client, Zones: zones(t, sim), Owner: "r1"}
	ctx := context.Background()
	_, err := s.SyncOnce(ctx, domain)
	require.NoError(t, err)
	ids := indexed(t, st, domain)
	a, _ := sim.Appointment(domain, ids[0])
	a.Priority = "STAT"
	sim.PutAppointment(a)
	require.NoError(t, s.Refresh(ctx, domain, ids[0]))
	p, err := st.SearchWorklist(ctx, store.WorklistQuery{Domain: domain, Count: 10,
		Where: []store.WorklistClause{{{{Field: store.WorklistFieldPriority, Op: "=", Value: "stat"}}}}})
	require.NoError(t, err)
	assert.Contains(t, fmt.Sprint(p.Rows), ids[0])

	sim.SetStatus(domain, ids[1], "AUTHORISED")
	require.NoError(t, s.Refresh(ctx, domain, ids[1]))
	assert.NotContains(t, indexed(t, st, domain), ids[1])
}

// TestReplicasNeverSyncAtOnce: replicas on one PostgreSQL database race
// for a domain walk after walk (each giving its lease up after a walk, so
// they really compete); no two walks ever overlap, and a replica that
// dies holding the lease is replaced once it runs out.
func TestReplicasNeverSyncAtOnce(t *testing.T) {
	t.Parallel()
	sim, client := simClient(t, qubssim.Options{Seed: 9, Appointments: 100})
	dsn := pgtest.DSN(t)
	domain := sim.Domains()[0]
	var walking, maxWalking, walks atomic.Int32
	hook := func(_ string, started bool) {
		if started {
			n := walking.Add(1)
			walks.Add(1)
			for {
				m := maxWalking.Load()
				if n <= m || maxWalking.CompareAndSwap(m, n) {
					break
				}
			}
			return
		}
		walking.Add(-1)
	}
	const replicas = 3
	syncers := make([]*worklist.Syncer, replicas)
	for i := range syncers {
		st, err := postgres.Open(context.Background(), dsn)
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		syncers[i] = &worklist.Syncer{Store: st, QUBS: client, Zones: zones(t, sim), Owner: fmt.Sprintf("r%d", i), Walking: hook}
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for _, s := range syncers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 8 {
				_, err := s.SyncOnce(ctx, domain)
				if err != nil && !errors.Is(err, worklist.ErrBusy) {
					t.Error(err)
					return
				}
				assert.NoError(t, s.Store.ReleaseWorklistLease(ctx, domain, s.Owner))
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int32(1), maxWalking.Load(), "walks overlapped")
	assert.Positive(t, walks.Load())

	// r0 takes the lease and dies; r1 is refused until it runs out.
	now := time.Now()
	syncers[0].Now = func() time.Time { return now }
	ok, err := syncers[0].Store.TakeWorklistLease(ctx, domain, "r0", time.Minute, now)
	require.NoError(t, err)
	require.True(t, ok)
	_, err = syncers[1].SyncOnce(ctx, domain)
	assert.ErrorIs(t, err, worklist.ErrBusy)
	later := now.Add(time.Minute + time.Second)
	syncers[1].Now = func() time.Time { return later }
	_, err = syncers[1].SyncOnce(ctx, domain)
	assert.NoError(t, err, "handed over within one lease")
}

func TestParseIntervals(t *testing.T) {
	t.Parallel()
	iv, err := worklist.ParseIntervals("20s; acme=5s ;coastal=2m")
	require.NoError(t, err)
	assert.Equal(t, 20*time.Second, iv.For("northside"))
	assert.Equal(t, 5*time.Second, iv.For("acme"))
	assert.Equal(t, 2*time.Minute, iv.For("coastal"))
	iv, err = worklist.ParseIntervals("acme=10s")
	require.NoError(t, err)
	assert.Equal(t, worklist.DefaultInterval, iv.For("other"))
	for _, bad := range []string{"fast", "10ms", "=10s", "acme=x"} {
		_, err := worklist.ParseIntervals(bad)
		assert.Error(t, err, bad)
	}
}

// TestRowOccurrence: a date without times is the site's whole local day.
func TestRowOccurrence(t *testing.T) {
	t.Parallel()
	z, err := mapping.NewZones("Australia/Sydney", "Perth Site=Australia/Perth")
	require.NoError(t, err)
	date := "2026-03-05"
	start, end := "09:30:00", "10:00:00"
	a := qubs.Appointment{Domain: "acme", AppointmentID: "A1", Status: qubs.StatusPendingReporting, ScheduledSite: "Perth Site", AppointmentDate: &date, Priority: "Urgent", Modality: "CT"}
	r, err := worklist.Row("acme", &a, z, time.Now())
	require.NoError(t, err)
	perth, _ := time.LoadLocation("Australia/Perth")
	assert.Equal(t, time.Date(2026, 3, 5, 0, 0, 0, 0, perth), r.OccurrenceStart.In(perth))
	assert.Equal(t, time.Date(2026, 3, 6, 0, 0, 0, 0, perth), r.OccurrenceEnd.In(perth))
	assert.Equal(t, "urgent", r.Priority)
	assert.Contains(t, r.Tokens, store.WorklistToken{Param: "modality", System: mapping.SystemDICOM, Code: "CT"})
	assert.Contains(t, string(r.Resource), `"meta":{"lastUpdated":"`)
	a.StartTime, a.EndTime = &start, &end
	r, err = worklist.Row("acme", &a, z, time.Now())
	require.NoError(t, err)
	assert.Equal(t, time.Date(2026, 3, 5, 9, 30, 0, 0, perth), r.OccurrenceStart.In(perth))
	assert.Equal(t, time.Date(2026, 3, 5, 10, 0, 1, 0, perth), r.OccurrenceEnd.In(perth), "to the end of the end's second")
}

// TestRowStarted: ImagingStudy.started as a range: the start's second, or
// the site's whole day when the study has a date and no start time (also
// when it has an end time), none without a date.
func TestRowStarted(t *testing.T) {
	t.Parallel()
	z, err := mapping.NewZones("Australia/Sydney", "Perth Site=Australia/Perth")
	require.NoError(t, err)
	perth, _ := time.LoadLocation("Australia/Perth")
	date, start, end := "2026-03-05", "09:30:00", "10:00:00"
	a := qubs.Appointment{Domain: "acme", AppointmentID: "A1", Status: qubs.StatusPendingReporting, ScheduledSite: "Perth Site", AppointmentDate: &date, EndTime: &end}
	r, err := worklist.Row("acme", &a, z, time.Now())
	require.NoError(t, err)
	assert.Equal(t, time.Date(2026, 3, 5, 0, 0, 0, 0, perth), r.StartedStart.In(perth))
	assert.Equal(t, time.Date(2026, 3, 6, 0, 0, 0, 0, perth), r.StartedEnd.In(perth))
	assert.Nil(t, r.OccurrenceStart, "an occurrence with an end and no start has no start")
	a.StartTime = &start
	r, err = worklist.Row("acme", &a, z, time.Now())
	require.NoError(t, err)
	assert.Equal(t, time.Date(2026, 3, 5, 9, 30, 0, 0, perth), r.StartedStart.In(perth))
	assert.Equal(t, time.Date(2026, 3, 5, 9, 30, 1, 0, perth), r.StartedEnd.In(perth), "its second, not the end time")
	a.AppointmentDate = nil
	r, err = worklist.Row("acme", &a, z, time.Now())
	require.NoError(t, err)
	assert.Nil(t, r.StartedStart)
	assert.Nil(t, r.StartedEnd)
}

// TestDatesAgreeWithRow: the date columns a walk computes without
// encoding the ServiceRequest (Dates) are those Row reads back from its
// JSON, over a simulated worklist and the occurrences the mapping writes
// in unusual ways (times it keeps verbatim, an end past midnight, year
// 9999, start or end alone).
func TestDatesAgreeWithRow(t *testing.T) {
	t.Parallel()
	z, err := mapping.NewZones("Australia/Sydney", "Perth Site=Australia/Perth")
	require.NoError(t, err)
	var appts []qubs.Appointment
	sim := qubssim.New(qubssim.Options{Seed: 5, Appointments: 300})
	for _, domain := range sim.Domains() {
		for _, id := range sim.PendingIDs(domain) {
			a, ok := sim.Appointment(domain, id)
			require.True(t, ok)
			appts = append(appts, a)
		}
	}
	s := func(v string) *string { return &v }
	for i, c := range []struct{ date, start, end *string }{
		{s("2026-03-05"), nil, nil}, {s("2026-03-05"), s("09:30:00"), nil}, {s("2026-03-05"), nil, s("10:00:00")},
		{s("2026-03-05"), s("23:30:00"), s("00:15:00")}, {s("9999-12-31"), s("23:00:00"), s("00:30:00")},
		{s("2026-03-05"), s("9h"), s("10:00:00")}, {s("05/03/2026"), s("09:30:00"), nil}, {s(""), nil, nil}, {nil, s("09:30:00"), nil},
	} {
		appts = append(appts, qubs.Appointment{Domain: "acme", AppointmentID: fmt.Sprint("E", i), Status: qubs.StatusPendingReporting,
			ScheduledSite: "Perth Site", AppointmentDate: c.date, StartTime: c.start, EndTime: c.end})
	}
	for _, a := range appts {
		r, err := worklist.Row(a.Domain, &a, z, time.Now())
		require.NoError(t, err)
		m, err := mapping.Map(&a, z)
		require.NoError(t, err)
		d := worklist.Dates(&m)
		assert.Equal(t, []any{r.OccurrenceStart, r.OccurrenceEnd, r.OccurrenceLocalStart, r.OccurrenceLocalEnd,
			r.StartedStart, r.StartedEnd, r.StartedLocalStart, r.StartedLocalEnd},
			[]any{d.OccurrenceStart, d.OccurrenceEnd, d.OccurrenceLocalStart, d.OccurrenceLocalEnd,
				d.StartedStart, d.StartedEnd, d.StartedLocalStart, d.StartedLocalEnd}, a.AppointmentID)
	}
}
