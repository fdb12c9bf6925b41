package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// worklistRow is a row of appointment n with content version v.
func worklistRow(domain string, n, v int) store.WorklistRow {
	start := base.Add(time.Duration(n) * time.Hour)
	end := start.Add(30 * time.Minute)
	prio := []string{"routine", "urgent", "stat", "asap"}[n%4]
	r := store.WorklistRow{
		Domain: domain, AppointmentID: fmt.Sprintf("A%03d", n), ID: fmt.Sprintf("sr%03d", n),
		Patient: fmt.Sprintf("Patient/p%d", n%3), Status: "active", Priority: prio, PriorityRank: store.WorklistPriorityRank(prio),
		OccurrenceStart: &start, OccurrenceEnd: &end, Site: "Site A",
		Tokens: []store.WorklistToken{
			{Param: "identifier", System: "urn:appt", Code: fmt.Sprintf("A%03d", n)},
			{Param: "modality", System: "DCM", Code: []string{"CT", "MR"}[n%2]},
		},
		Appointment: []byte(fmt.Sprintf(`{"appointmentId":"A%03d","patientName":%q}`, n, phi)),
		Resource:    []byte(fmt.Sprintf(`{"resourceType":"ServiceRequest","id":"sr%03d","v":%d}`, n, v)),
		Digest:      fmt.Sprintf("d%d-%d", n, v),
	}
	if n%2 == 0 {
		r.Performer = "Practitioner/rad1"
	}
	if n%5 != 0 {
		nb := base.Add(time.Duration(100-n) * time.Minute)
		r.NeededBy = &nb
	}
	return r
}

func worklistIDs(rows []store.WorklistRow) []string {
	var ids []string
	for _, r := range rows {
		ids = append(ids, r.ID)
	}
	return ids
}

func worklistEvents(t *testing.T, s store.Store, after int64) []string {
	t.Helper()
	return topicEvents(t, s, store.EventTopicWorklist, after)
}

// topicEvents are the events of topic after seq after, as "kind:focus".
func topicEvents(t *testing.T, s store.Store, topic string, after int64) []string {
	t.Helper()
	evs, err := s.EventsAfter(ctxT(t), after, 1000)
	require.NoError(t, err)
	var out []string
	for _, e := range evs {
		if e.Topic == topic {
			out = append(out, e.Kind+":"+e.FocusID)
		}
	}
	return out
}

func testWorklistSync(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	const lease = time.Minute
	ok, err := s.TakeWorklistLease(ctx, "acme", "r1", lease, base)
	require.NoError(t, err)
	require.True(t, ok)
	st, err := s.WorklistSyncState(ctx, "acme")
	require.NoError(t, err)
	assert.Nil(t, st.Finished, "no walk yet")

	// First walk: three arrive.
	ch, err := s.ApplyWorklist(ctx, "acme", "r1", lease, []store.WorklistRow{worklistRow("acme", 1, 1), worklistRow("acme", 2, 1), worklistRow("acme", 3, 1)}, base)
	require.NoError(t, err)
	require.Len(t, ch, 3)
	assert.Equal(t, store.EventArrived, ch[0].Kind)
	left, err := s.FinishWorklistSync(ctx, "acme", "r1", base, base.Add(time.Second))
	require.NoError(t, err)
	assert.Empty(t, left)
	assert.Equal(t, []string{"arrived:sr001", "arrived:sr002", "arrived:sr003"}, worklistEvents(t, s, 0))

	// Second walk: 1 unchanged, 2 changed, 3 gone, 4 new.
	t2 := base.Add(time.Minute)
	ok, err = s.TakeWorklistLease(ctx, "acme", "r1", lease, t2)
	require.NoError(t, err)
	require.True(t, ok, "the holder renews")
	ch, err = s.ApplyWorklist(ctx, "acme", "r1", lease, []store.WorklistRow{worklistRow("acme", 1, 1), worklistRow("acme", 2, 2), worklistRow("acme", 4, 1)}, t2)
	require.NoError(t, err)
	assert.Equal(t, []store.WorklistChange{{AppointmentID: "A001"}, {AppointmentID: "A002", Kind: store.EventChanged}, {AppointmentID: "A004", Kind: store.EventArrived}}, ch)
	left, err = s.FinishWorklistSync(ctx, "acme", "r1", t2, t2.Add(time.Second))
	require.NoError(t, err)
	assert.Equal(t, []string{"A003"}, left)
	evs, err := s.EventsAfter(ctx, 0, 100)
	require.NoError(t, err)
	require.Len(t, evs, 6)
	assert.Equal(t, "left", evs[5].Kind)
	assert.Equal(t, "A003", evs[5].AppointmentID)
	assert.Contains(t, string(evs[5].Resource), `"id":"sr003"`, "a left event carries the resource as it last was")
	assert.Contains(t, string(evs[3].Resource), `"v":2`)

	st, err = s.WorklistSyncState(ctx, "acme")
	require.NoError(t, err)
	require.NotNil(t, st.Finished)
	assert.Equal(t, t2, *st.Started)
	assert.Equal(t, "r1", st.Owner)

	page, err := s.SearchWorklist(ctx, store.WorklistQuery{Domain: "acme", Count: 10, Total: true})
	require.NoError(t, err)
	assert.Equal(t, []string{"sr001", "sr002", "sr004"}, worklistIDs(page.Rows))
	assert.Equal(t, 3, page.Total)
	assert.Equal(t, base, page.Rows[0].LastUpdated, "unchanged keeps its lastUpdated")
	assert.Equal(t, t2, page.Rows[0].SeenAt)
	assert.Equal(t, t2, page.Rows[1].LastUpdated)
	assert.Contains(t, string(page.Rows[0].Appointment), phi)

	// A read found 4 gone: it leaves at once; a walk's batch read before
	// that does not bring it back.
	t3 := t2.Add(time.Minute)
	ok, err = s.LeaveWorklist(ctx, "acme", "A004", t3)
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = s.LeaveWorklist(ctx, "acme", "A004", t3)
	require.NoError(t, err)
	assert.False(t, ok, "already gone")
	_, err = s.ApplyWorklist(ctx, "acme", "", 0, []store.WorklistRow{worklistRow("acme", 4, 1)}, t3.Add(-time.Second))
	require.NoError(t, err)
	// A read's refresh (no owner) brings 3 back.
	ch, err = s.ApplyWorklist(ctx, "acme", "", 0, []store.WorklistRow{worklistRow("acme", 3, 1)}, t3)
	require.NoError(t, err)
	assert.Equal(t, store.EventArrived, ch[0].Kind)
	page, err = s.SearchWorklist(ctx, store.WorklistQuery{Domain: "acme", Count: 10})
	require.NoError(t, err)
	assert.Equal(t, []string{"sr001", "sr002", "sr003"}, worklistIDs(page.Rows))
	assert.Equal(t, -1, page.Total)

	// Retention deletes rows that left before the cutoff, not others.
	_, err = s.PurgeBefore(ctx, t3.Add(time.Second))
	require.NoError(t, err)
	ch, err = s.ApplyWorklist(ctx, "acme", "", 0, []store.WorklistRow{worklistRow("acme", 4, 1)}, t3.Add(time.Minute))
	require.NoError(t, err)
	assert.Equal(t, store.EventArrived, ch[0].Kind, "a purged row arrives anew")

	_, err = s.ApplyWorklist(ctx, "acme", "r1", lease, []store.WorklistRow{{AppointmentID: "x"}}, t3)
	assert.True(t, store.KindOf(err) == store.KindInvalid, "%v", err)
}

func testWorklistLease(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	const lease = time.Minute
	take := func(owner string, now time.Time) bool {
		t.Helper()
		ok, err := s.TakeWorklistLease(ctx, "acme", owner, lease, now)
		require.NoError(t, err)
		return ok
	}
	assert.True(t, take("r1", base))
	assert.False(t, take("r2", base.Add(time.Second)), "held")
	assert.True(t, take("r1", base.Add(30*time.Second)), "the holder renews")
	assert.True(t, take("r1", base.Add(80*time.Second)), "renewed to 90s")
	// r1 dies; r2 takes over once the lease ran out.
	assert.False(t, take("r2", base.Add(139*time.Second)))
	assert.True(t, take("r2", base.Add(141*time.Second)))
	// r1, late, is fenced.
	_, err := s.ApplyWorklist(ctx, "acme", "r1", lease, []store.WorklistRow{worklistRow("acme", 1, 1)}, base.Add(142*time.Second))
	assert.True(t, store.KindOf(err) == store.KindConflict, "%v", err)
	_, err = s.FinishWorklistSync(ctx, "acme", "r1", base, base.Add(142*time.Second))
	assert.True(t, store.KindOf(err) == store.KindConflict, "%v", err)
	_, err = s.ApplyWorklist(ctx, "acme", "r2", lease, []store.WorklistRow{worklistRow("acme", 1, 1)}, base.Add(142*time.Second))
	assert.NoError(t, err)
	require.NoError(t, s.ReleaseWorklistLease(ctx, "acme", "r2"))
	assert.True(t, take("r3", base.Add(143*time.Second)), "released")
	assert.True(t, take("r1", base.Add(143*time.Second).Add(lease)), "another domain's lease is its own")
	ok, err := s.TakeWorklistLease(ctx, "other", "r1", lease, base)
	require.NoError(t, err)
	assert.True(t, ok)
	_, err = s.TakeWorklistLease(ctx, "acme", "", lease, base)
	assert.True(t, store.KindOf(err) == store.KindInvalid)
}

func testWorklistSearch(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	var rows []store.WorklistRow
	for n := 1; n <= 20; n++ {
		rows = append(rows, worklistRow("acme", n, 1))
	}
	_, err := s.ApplyWorklist(ctx, "acme", "", 0, rows, base)
	require.NoError(t, err)
	_, err = s.ApplyWorklist(ctx, "other", "", 0, []store.WorklistRow{worklistRow("other", 1, 1)}, base)
	require.NoError(t, err)
	search := func(q store.WorklistQuery) []string {
		t.Helper()
		q.Domain = "acme"
		if q.Count == 0 {
			q.Count = 100
		}
		p, err := s.SearchWorklist(ctx, q)
		require.NoError(t, err)
		return worklistIDs(p.Rows)
	}
	cond := func(field, op string, v any) store.WorklistCond {
		return store.WorklistCond{Field: field, Op: op, Value: v}
	}
	one := func(cs ...store.WorklistCond) store.WorklistClause { return store.WorklistClause{cs} }
	tok := func(param, system, code string) store.WorklistCond {
		return store.WorklistCond{Field: param, Token: &store.WorklistTokenMatch{System: system, Code: code, HasSystem: system != ""}}
	}
	t.Run("filters", func(t *testing.T) {
		assert.Equal(t, []string{"sr003", "sr007", "sr011", "sr015", "sr019"}, search(store.WorklistQuery{Where: []store.WorklistClause{one(cond("priority", "=", "asap"))}}))
		assert.Equal(t, []string{"sr004", "sr005"}, search(store.WorklistQuery{Where: []store.WorklistClause{
			{{tok("identifier", "urn:appt", "A004")}, {tok("identifier", "", "A005")}}}}), "OR")
		assert.Empty(t, search(store.WorklistQuery{Where: []store.WorklistClause{one(tok("identifier", "other", "A004"))}}))
		assert.Equal(t, []string{"sr001", "sr005", "sr009"}, search(store.WorklistQuery{Where: []store.WorklistClause{
			one(tok("modality", "", "MR")), one(cond("priority_rank", "=", 3)), one(cond("id", "<", "sr010"))}}), "AND")
		assert.Len(t, search(store.WorklistQuery{Where: []store.WorklistClause{one(cond("performer", "null", nil))}}), 10)
		assert.Len(t, search(store.WorklistQuery{Where: []store.WorklistClause{one(cond("needed_by", "null", nil))}}), 4)
		assert.Equal(t, []string{"sr001", "sr002"}, search(store.WorklistQuery{Where: []store.WorklistClause{
			one(cond("occurrence_start", "<", base.Add(150*time.Minute)))}}))
		assert.Equal(t, []string{"sr020"}, search(store.WorklistQuery{Where: []store.WorklistClause{
			one(cond("occurrence_start", ">=", base.Add(20*time.Hour)), cond("occurrence_end", "<=", base.Add(21*time.Hour)))}}))
	})
	t.Run("sort and pages", func(t *testing.T) {
		all := search(store.WorklistQuery{Sort: []store.WorklistSortKey{{Field: "priority_rank"}, {Field: "occurrence_start", Desc: true}}})
		require.Len(t, all, 20)
		assert.Equal(t, []string{"sr018", "sr014"}, all[:2], "stat first, latest first")
		assert.Equal(t, "sr004", all[19])
		var paged []string
		q := store.WorklistQuery{Domain: "acme", Count: 3, Total: true, Sort: []store.WorklistSortKey{{Field: "priority_rank"}, {Field: "occurrence_start", Desc: true}}}
		for {
			p, err := s.SearchWorklist(ctx, q)
			require.NoError(t, err)
			assert.Equal(t, 20, p.Total)
			paged = append(paged, worklistIDs(p.Rows)...)
			if p.Next == "" {
				break
			}
			q.After = p.Next
		}
		assert.Equal(t, all, paged)
		// needed_by: missing last.
		byNeed := search(store.WorklistQuery{Sort: []store.WorklistSortKey{{Field: "needed_by"}}})
		assert.Equal(t, "sr019", byNeed[0])
		assert.Equal(t, []string{"sr005", "sr010", "sr015", "sr020"}, byNeed[16:])
		byUpd := search(store.WorklistQuery{Sort: []store.WorklistSortKey{{Field: "last_updated", Desc: true}}, Count: 2})
		assert.Len(t, byUpd, 2)
	})
	t.Run("stable while rows change", func(t *testing.T) {
		q := store.WorklistQuery{Domain: "acme", Count: 5}
		p, err := s.SearchWorklist(ctx, q)
		require.NoError(t, err)
		assert.Equal(t, "sr005", p.Rows[4].ID)
		// sr003 leaves, a new sr000 sorts before the cursor: neither
		// shifts the next page.
		_, err = s.LeaveWorklist(ctx, "acme", "A003", base.Add(time.Hour))
		require.NoError(t, err)
		_, err = s.ApplyWorklist(ctx, "acme", "", 0, []store.WorklistRow{worklistRow("acme", 0, 1)}, base.Add(time.Hour))
		require.NoError(t, err)
		q.After = p.Next
		p, err = s.SearchWorklist(ctx, q)
		require.NoError(t, err)
		assert.Equal(t, []string{"sr006", "sr007", "sr008", "sr009", "sr010"}, worklistIDs(p.Rows))
	})
	t.Run("resource only", func(t *testing.T) {
		// The same rows, order and pages as a full search, with only the
		// ServiceRequest's columns; then whatever changes a row's content
		// is seen at once (the store may keep resources in memory).
		sort := []store.WorklistSortKey{{Field: "priority_rank"}, {Field: "needed_by", Desc: true}}
		walk := func(only bool) (ids []string, res []string) {
			q := store.WorklistQuery{Domain: "acme", Count: 4, Sort: sort, ResourceOnly: only}
			for {
				p, err := s.SearchWorklist(ctx, q)
				require.NoError(t, err)
				for _, r := range p.Rows {
					ids, res = append(ids, r.ID), append(res, string(r.Resource))
					if only {
						assert.Nil(t, r.Appointment)
						assert.NotEmpty(t, r.Patient)
						assert.NotEmpty(t, r.Digest)
						assert.False(t, r.LastUpdated.IsZero())
					} else {
						assert.NotNil(t, r.Appointment)
					}
				}
				if p.Next == "" {
					return ids, res
				}
				q.After = p.Next
			}
		}
		fullIDs, fullRes := walk(false)
		onlyIDs, onlyRes := walk(true)
		assert.Equal(t, fullIDs, onlyIDs)
		assert.Equal(t, fullRes, onlyRes)
		first := func() string {
			p, err := s.SearchWorklist(ctx, store.WorklistQuery{Domain: "acme", Count: 1, ResourceOnly: true,
				Where: []store.WorklistClause{one(cond("id", "=", "sr006"))}})
			require.NoError(t, err)
			require.Len(t, p.Rows, 1)
			return string(p.Rows[0].Resource)
		}
		assert.Contains(t, first(), `"v":1`)
		_, err := s.ApplyWorklist(ctx, "acme", "", 0, []store.WorklistRow{worklistRow("acme", 6, 2)}, base.Add(2*time.Hour))
		require.NoError(t, err)
		assert.Contains(t, first(), `"v":2`, "a change is seen at once")
		// Left and back with the same digest but a resource written anew.
		_, err = s.LeaveWorklist(ctx, "acme", "A006", base.Add(3*time.Hour))
		require.NoError(t, err)
		back := worklistRow("acme", 6, 2)
		back.Resource = []byte(`{"resourceType":"ServiceRequest","id":"sr006","v":2,"back":true}`)
		_, err = s.ApplyWorklist(ctx, "acme", "", 0, []store.WorklistRow{back}, base.Add(4*time.Hour))
		require.NoError(t, err)
		assert.Contains(t, first(), `"back":true`, "an arrival is seen at once")
	})
	t.Run("invalid", func(t *testing.T) {
		for name, q := range map[string]store.WorklistQuery{
			"field":  {Where: []store.WorklistClause{one(cond("appointment", "=", "x"))}},
			"op":     {Where: []store.WorklistClause{one(cond("id", "LIKE", "x"))}},
			"sort":   {Sort: []store.WorklistSortKey{{Field: "resource"}}},
			"cursor": {After: "not-a-cursor"},
			"count":  {Count: -1},
		} {
			q.Domain = "acme"
			if q.Count == 0 {
				q.Count = 10
			}
			_, err := s.SearchWorklist(ctx, q)
			assert.True(t, store.KindOf(err) == store.KindInvalid, "%s: %v", name, err)
		}
	})
}

// testReplicasWorklistResources: a ServiceRequest one replica served is
// not served again by it once another replica changed it.
func testReplicasWorklistResources(t *testing.T, open func(ctx context.Context) (store.Store, error)) {
	ctx := ctxT(t)
	a, err := open(ctx)
	require.NoError(t, err)
	defer a.Close()
	b, err := open(ctx)
	require.NoError(t, err)
	defer b.Close()
	_, err = a.ApplyWorklist(ctx, "acme", "", 0, []store.WorklistRow{worklistRow("acme", 1, 1)}, base)
	require.NoError(t, err)
	served := func() string {
		p, err := a.SearchWorklist(ctx, store.WorklistQuery{Domain: "acme", Count: 10, ResourceOnly: true})
		require.NoError(t, err)
		require.Len(t, p.Rows, 1)
		return string(p.Rows[0].Resource)
	}
	assert.Contains(t, served(), `"v":1`)
	_, err = b.ApplyWorklist(ctx, "acme", "", 0, []store.WorklistRow{worklistRow("acme", 1, 2)}, base.Add(time.Minute))
	require.NoError(t, err)
	assert.Contains(t, served(), `"v":2`)
}

// testReplicasWorklistLease races replicas for one domain's lease: at any
// instant exactly one wins.
func testReplicasWorklistLease(t *testing.T, open func(ctx context.Context) (store.Store, error)) {
	ctx := ctxT(t)
	const replicas = 4
	stores := make([]store.Store, replicas)
	for i := range stores {
		s, err := open(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	for round := range 10 {
		now := base.Add(time.Duration(round) * time.Hour) // every earlier lease has run out
		var wg sync.WaitGroup
		wins := make([]bool, replicas)
		for i, s := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := s.TakeWorklistLease(ctx, "acme", fmt.Sprintf("r%d", i), time.Minute, now)
				assert.NoError(t, err)
				wins[i] = ok
			}()
		}
		wg.Wait()
		n := 0
		for _, w := range wins {
			if w {
				n++
			}
		}
		assert.Equal(t, 1, n, "round %d: %v", round, wins)
	}
}

// testWorklistTaskAndStarted: the started range written with a row, and a
// study's Task status and lastUpdated derived in the query from the
// report versions delivered for its appointment.
func testWorklistTaskAndStarted(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	var rows []store.WorklistRow
	for n := 1; n <= 5; n++ {
		r := worklistRow("acme", n, 1)
		switch n {
		case 1: // a start time: its second
			lo := base.Add(time.Hour)
			hi := lo.Add(time.Second)
			r.StartedStart, r.StartedEnd = &lo, &hi
		case 2: // a date alone: the whole day
			lo := base.Truncate(24 * time.Hour)
			hi := lo.Add(24 * time.Hour)
			r.StartedStart, r.StartedEnd = &lo, &hi
		}
		rows = append(rows, r)
	}
	_, err := s.ApplyWorklist(ctx, "acme", "", 0, rows, base)
	require.NoError(t, err)

	// One due at a time, each claimed and settled at once. A003 of
	// another domain: completed, which says nothing of acme's A003.
	deliver := func(r *store.Report, at time.Time, fail bool) {
		t.Helper()
		job := claim(t, s, "w1", at)
		require.Equal(t, r.Domain+"/"+r.ID, job.Domain+"/"+job.ID)
		if fail {
			require.NoError(t, s.FailDelivery(ctx, "w1", r.Domain, job.ID, job.Version, "refused"))
			return
		}
		require.NoError(t, s.CompleteDelivery(ctx, "w1", r.Domain, job.ID, job.Version, "guid", at))
	}
	final := func(r *store.Report) *store.Report { r.Status = "final"; return r }
	deliver(create(t, s, final(newReport("other", "r3", "A003", base))), base.Add(time.Minute), false)
	// A001: a preliminary delivered.
	deliver(create(t, s, newReport("acme", "r1", "A001", base)), base.Add(time.Minute), false)
	// A002: a preliminary, then the final.
	r2 := create(t, s, newReport("acme", "r2", "A002", base))
	deliver(r2, base.Add(2*time.Minute), false)
	deliver(update(t, s, final(r2)), base.Add(3*time.Minute), false)
	// A004: a final delivered, then a preliminary that failed.
	r4 := create(t, s, final(newReport("acme", "r4", "A004", base)))
	deliver(r4, base.Add(4*time.Minute), false)
	r4.Status = "preliminary"
	deliver(update(t, s, r4), base.Add(5*time.Minute), true)
	// A003: pending, never delivered.
	create(t, s, newReport("acme", "r3", "A003", base))

	search := func(cs ...store.WorklistCond) []string {
		t.Helper()
		p, err := s.SearchWorklist(ctx, store.WorklistQuery{Domain: "acme", Count: 100, Where: []store.WorklistClause{{cs}}})
		require.NoError(t, err)
		return worklistIDs(p.Rows)
	}
	cond := func(field, op string, v any) store.WorklistCond {
		return store.WorklistCond{Field: field, Op: op, Value: v}
	}

	t.Run("started", func(t *testing.T) {
		assert.Equal(t, []string{"sr001"}, search(cond(store.WorklistFieldStartedStart, ">=", base.Add(time.Hour)),
			cond(store.WorklistFieldStartedEnd, "<=", base.Add(time.Hour+time.Minute))))
		assert.Equal(t, []string{"sr002"}, search(cond(store.WorklistFieldStartedEnd, ">", base.Add(time.Minute)),
			cond(store.WorklistFieldStartedStart, "<", base.Add(time.Hour))), "the day overlaps")
		assert.Equal(t, []string{"sr001", "sr002"}, search(cond(store.WorklistFieldStartedStart, "notnull", nil)))
	})

	t.Run("task status", func(t *testing.T) {
		status := func(code string) []string { return search(cond(store.WorklistFieldTaskStatus, "=", code)) }
		assert.Equal(t, []string{"sr001"}, status("in-progress"))
		assert.Equal(t, []string{"sr002", "sr004"}, status("completed"), "a failed later version leaves what QUBS holds")
		assert.Equal(t, []string{"sr003", "sr005"}, status("requested"), "pending is not delivered")
		assert.Equal(t, []string{"sr001", "sr003", "sr005"}, search(cond(store.WorklistFieldTaskStatus, "<>", "completed")))

		lu := store.WorklistFieldTaskLastUpdated
		assert.Equal(t, []string{"sr002", "sr004"}, search(cond(lu, ">=", base.Add(3*time.Minute))), "a failed version is no change")
		assert.Equal(t, []string{"sr001"}, search(cond(lu, "=", base.Add(time.Minute))))
		assert.Equal(t, []string{"sr003", "sr005"}, search(cond(lu, "<", base.Add(time.Second))), "no delivery: the row's lastUpdated")
	})
}
