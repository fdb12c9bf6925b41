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
