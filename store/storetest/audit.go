package storetest

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// auditRecord is a minimal valid record of domain with id, recorded at at.
func auditRecord(domain, id string, at time.Time) *store.AuditRecord {
	return &store.AuditRecord{
		Domain: domain, ID: id, Recorded: at,
		Action: store.AuditActionRead, Interaction: "read", Outcome: store.AuditOutcomeSuccess,
		AgentID: "ris", AgentMethod: "static", TokenID: "ris-token",
	}
}

func record(t *testing.T, s store.Store, a *store.AuditRecord) *store.AuditRecord {
	t.Helper()
	require.NoError(t, s.RecordAudit(ctxT(t), a))
	return a
}

func auditIDs(rs []*store.AuditRecord) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func testAuditRecordAndRead(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	in := &store.AuditRecord{
		ID:            "ae-1",
		Domain:        "acme",
		Recorded:      base.Add(789 * time.Nanosecond),
		Action:        store.AuditActionRead,
		Interaction:   "read",
		Outcome:       store.AuditOutcomeSuccess,
		OutcomeDesc:   "ok",
		AgentID:       "ris-1",
		AgentMethod:   "smart",
		TokenID:       "jti-123",
		NetworkAddr:   "192.0.2.10",
		PatientRefs:   []string{"Patient/1", "Patient/2", "Patient/1"},
		EntityRefs:    []string{"ServiceRequest/A1", "ServiceRequest/A1", "DiagnosticReport/r-1/_history/2"},
		Query:         "",
		CorrelationID: "corr-1",
		RequestPath:   "/fhir/:domain/ServiceRequest/:id",
	}
	require.NoError(t, s.RecordAudit(ctx, in))
	assert.Equal(t, base, in.Recorded, "normalised to microseconds")
	assert.Equal(t, []string{"Patient/1", "Patient/2"}, in.PatientRefs, "duplicates dropped")
	assert.Equal(t, []string{"ServiceRequest/A1", "DiagnosticReport/r-1/_history/2"}, in.EntityRefs, "duplicates dropped, order kept")

	got, err := s.AuditEvent(ctx, "acme", "ae-1")
	require.NoError(t, err)
	assert.Equal(t, in, got)
	assert.Equal(t, time.UTC, got.Recorded.Location())

	// A search: its query, no patients, an outcome other than success.
	q := auditRecord("acme", "ae-2", base)
	q.Action, q.Interaction, q.Outcome = store.AuditActionExecute, "search-type", store.AuditOutcomeMinorFailure
	q.OutcomeDesc = "invalid: unknown search parameter"
	q.Query = store.AuditQuery("ServiceRequest", map[string][]string{"status": {"active"}, "_count": {"5"}})
	record(t, s, q)
	got, err = s.AuditEvent(ctx, "acme", "ae-2")
	require.NoError(t, err)
	assert.Equal(t, q, got)
	assert.Equal(t, "ServiceRequest?_count&status", got.Query)
	assert.Nil(t, got.PatientRefs)
	assert.Nil(t, got.EntityRefs)

	// Patient references are searchable once each.
	page, _, err := s.SearchAudit(ctx, "acme", store.AuditFilter{PatientRef: "Patient/1"})
	require.NoError(t, err)
	assert.Equal(t, []string{"ae-1"}, auditIDs(page))

	t.Run("the store makes the id and the time", func(t *testing.T) {
		before := time.Now()
		a := record(t, s, &store.AuditRecord{Domain: "acme", Action: "C", Interaction: "create", Outcome: "0"})
		b := record(t, s, &store.AuditRecord{Domain: "acme", Action: "C", Interaction: "create", Outcome: "0"})
		assert.Regexp(t, regexp.MustCompile(`^[0-9a-f]{32}$`), a.ID)
		assert.NotEqual(t, a.ID, b.ID)
		assert.False(t, a.Recorded.Before(before.Truncate(time.Microsecond)), "recorded %s, before %s", a.Recorded, before)
		assert.WithinDuration(t, time.Now(), a.Recorded, time.Minute)
		got, err := s.AuditEvent(ctxT(t), "acme", a.ID)
		require.NoError(t, err)
		assert.Equal(t, a, got)
	})

	t.Run("errors", func(t *testing.T) {
		ctx := ctxT(t)
		assert.ErrorIs(t, s.RecordAudit(ctx, auditRecord("acme", "ae-1", base)), store.ErrConflict)
		record(t, s, auditRecord("northside", "ae-1", base)) // ids are per domain
		_, err := s.AuditEvent(ctx, "acme", "ae-404")
		assert.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.AuditEvent(ctx, "elsewhere", "ae-1")
		assert.ErrorIs(t, err, store.ErrNotFound)
		err = s.RecordAudit(ctx, auditRecord("acme", "ae-1", base))
		var e *store.Error
		require.ErrorAs(t, err, &e)
		assert.Contains(t, e.Op, `RecordAudit("acme", "ae-1")`)
	})
}

func testAuditInvalid(t *testing.T, s store.Store) {
	tests := []struct {
		name   string
		modify func(a *store.AuditRecord)
	}{
		{"no domain", func(a *store.AuditRecord) { a.Domain = "" }},
		{"id with a space", func(a *store.AuditRecord) { a.ID = "a b" }},
		{"id too long", func(a *store.AuditRecord) { a.ID = fmt.Sprintf("%065d", 1) }},
		{"no action", func(a *store.AuditRecord) { a.Action = "" }},
		{"unknown action", func(a *store.AuditRecord) { a.Action = "X" }},
		{"unknown outcome", func(a *store.AuditRecord) { a.Outcome = "1" }},
		{"no outcome", func(a *store.AuditRecord) { a.Outcome = "" }},
		{"unknown interaction", func(a *store.AuditRecord) { a.Interaction = "fetch" }},
		{"patient ref of another type", func(a *store.AuditRecord) { a.PatientRefs = []string{"Observation/1"} }},
		{"patient ref without id", func(a *store.AuditRecord) { a.PatientRefs = []string{"Patient/"} }},
		{"bare patient id", func(a *store.AuditRecord) { a.PatientRefs = []string{"123"} }},
		{"empty entity ref", func(a *store.AuditRecord) { a.EntityRefs = []string{"ServiceRequest/1", ""} }},
		{"absolute entity ref", func(a *store.AuditRecord) { a.EntityRefs = []string{"https://x/fhir/ServiceRequest/1"} }},
		{"entity ref with a bad id", func(a *store.AuditRecord) { a.EntityRefs = []string{"ServiceRequest/a b"} }},
		{"entity ref with a bad version", func(a *store.AuditRecord) { a.EntityRefs = []string{"DiagnosticReport/1/_history/"} }},
		{"entity ref without type", func(a *store.AuditRecord) { a.EntityRefs = []string{"/1"} }},
		{"query with values", func(a *store.AuditRecord) { a.Query = "Patient?name=Citizen" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := auditRecord("acme", "", base)
			tt.modify(a)
			assert.ErrorIs(t, s.RecordAudit(ctxT(t), a), store.ErrInvalid)
		})
	}
	assert.ErrorIs(t, s.RecordAudit(ctxT(t), nil), store.ErrInvalid)
	got, _, err := s.SearchAudit(ctxT(t), "acme", store.AuditFilter{})
	require.NoError(t, err)
	assert.Empty(t, got, "nothing invalid was stored")
}

// testAuditBatch: RecordAudits writes a batch as RecordAudit writes each
// record, all or nothing, and a retried batch neither fails nor doubles.
func testAuditBatch(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	require.NoError(t, s.RecordAudits(ctx, nil), "an empty batch is no work")
	var batch []*store.AuditRecord
	for i := range 600 { // more rows than one SQLite statement takes
		a := auditRecord("acme", "", base.Add(time.Duration(i)*time.Second))
		a.Action, a.Interaction = store.AuditActionExecute, "search-type"
		a.Query = "ServiceRequest?_count"
		for j := range 5 {
			a.PatientRefs = append(a.PatientRefs, fmt.Sprintf("Patient/p%d", (i+j)%7))
			a.EntityRefs = append(a.EntityRefs, fmt.Sprintf("ServiceRequest/s%d", i*5+j))
		}
		a.PatientRefs = append(a.PatientRefs, a.PatientRefs[0]) // deduplicated
		batch = append(batch, a)
	}
	require.NoError(t, s.RecordAudits(ctx, batch))
	for _, a := range batch {
		require.Regexp(t, `^[0-9a-f]{32}$`, a.ID, "the store makes the ids")
		require.Len(t, a.PatientRefs, 5)
	}
	for _, i := range []int{0, 255, 256, 599} {
		got, err := s.AuditEvent(ctx, "acme", batch[i].ID)
		require.NoError(t, err)
		assert.Equal(t, batch[i], got, "record %d", i)
	}
	countPatient := func(ref string) int {
		n, after := 0, ""
		for {
			page, next, err := s.SearchAudit(ctx, "acme", store.AuditFilter{PatientRef: ref, Limit: store.MaxSearchLimit, After: after})
			require.NoError(t, err)
			n += len(page)
			if next == "" {
				return n
			}
			after = next
		}
	}
	want := 0
	for _, a := range batch {
		if slices.Contains(a.PatientRefs, "Patient/p3") {
			want++
		}
	}
	assert.Equal(t, want, countPatient("Patient/p3"), "every patient row written")

	t.Run("a retried batch is neither an error nor doubled", func(t *testing.T) {
		extra := auditRecord("acme", "", base)
		extra.PatientRefs = []string{"Patient/retry"}
		again := append(slices.Clone(batch[:3]), extra)
		require.NoError(t, s.RecordAudits(ctxT(t), again))
		assert.Equal(t, want, countPatient("Patient/p3"))
		assert.Equal(t, 1, countPatient("Patient/retry"), "the new record of the batch is written")

		// A large batch (PostgreSQL writes it with COPY, which cannot
		// skip a record it has) written again, with new records among
		// the old, as the journal gives back a crashed process's records.
		big := slices.Clone(batch[100:400])
		var fresh []*store.AuditRecord
		for i := range 150 {
			a := auditRecord("acme", "", base.Add(time.Duration(i)*time.Millisecond))
			a.PatientRefs = []string{"Patient/retry-big", fmt.Sprintf("Patient/retry-%d", i)}
			fresh = append(fresh, a)
			big = append(big[:2*i+1], append([]*store.AuditRecord{a}, big[2*i+1:]...)...)
		}
		require.NoError(t, s.RecordAudits(ctxT(t), big))
		assert.Equal(t, want, countPatient("Patient/p3"), "no old record doubled")
		assert.Equal(t, len(fresh), countPatient("Patient/retry-big"), "every new record written")
		got, err := s.AuditEvent(ctxT(t), "acme", fresh[149].ID)
		require.NoError(t, err)
		assert.Equal(t, fresh[149], got)
		require.NoError(t, s.RecordAudits(ctxT(t), fresh), "the new records again, on their own")
		assert.Equal(t, len(fresh), countPatient("Patient/retry-big"))
	})

	t.Run("one invalid record refuses the batch", func(t *testing.T) {
		good := auditRecord("acme", "batch-good", base)
		good.PatientRefs = []string{"Patient/all-or-nothing"}
		bad := auditRecord("acme", "batch-bad", base)
		bad.Query = "Patient?name=Citizen"
		assert.ErrorIs(t, s.RecordAudits(ctxT(t), []*store.AuditRecord{good, bad}), store.ErrInvalid)
		_, err := s.AuditEvent(ctxT(t), "acme", "batch-good")
		assert.ErrorIs(t, err, store.ErrNotFound, "nothing of the batch was written")
		assert.Zero(t, countPatient("Patient/all-or-nothing"))
	})
}

// auditAt is the time of the fixture's record i.
func auditAt(i int) time.Time { return base.Add(time.Duration(i) * time.Minute) }

// auditFixture records the search tests' records in domain, and one in
// another domain; auditAll is their order in a search (newest first).
func auditFixture(t *testing.T, s store.Store, domain string) {
	t.Helper()
	fixture := []struct {
		id          string
		at          int
		action      string
		interaction string
		agent       string
		patients    []string
	}{
		{"a1", 0, store.AuditActionRead, "read", "ris", []string{"Patient/1"}},
		{"a2", 1, store.AuditActionExecute, "search-type", "ris", []string{"Patient/1", "Patient/2"}},
		{"a3", 2, store.AuditActionCreate, "create", "pacs", []string{"Patient/2"}},
		{"a4", 3, store.AuditActionUpdate, "update", "pacs", []string{"Patient/2"}},
		{"a5", 4, store.AuditActionRead, "capabilities", "ris", nil},
		// Two at the same instant: the id breaks the tie.
		{"tie-b", 5, store.AuditActionRead, "read", "pacs", []string{"Patient/3"}},
		{"tie-a", 5, store.AuditActionRead, "read", "pacs", []string{"Patient/3"}},
	}
	for _, f := range fixture {
		a := auditRecord(domain, f.id, auditAt(f.at))
		a.Action, a.Interaction, a.AgentID, a.PatientRefs = f.action, f.interaction, f.agent, f.patients
		record(t, s, a)
	}
	other := auditRecord(domain+"-other", "a1", auditAt(0))
	other.PatientRefs = []string{"Patient/1"}
	record(t, s, other)
}

var auditAll = []string{"tie-b", "tie-a", "a5", "a4", "a3", "a2", "a1"}

func testAuditSearch(t *testing.T, s store.Store) {
	auditFixture(t, s, "acme")
	tests := []struct {
		name string
		f    store.AuditFilter
		want []string
	}{
		{"all, newest first", store.AuditFilter{}, auditAll},
		{"patient", store.AuditFilter{PatientRef: "Patient/1"}, []string{"a2", "a1"}},
		{"another patient", store.AuditFilter{PatientRef: "Patient/2"}, []string{"a4", "a3", "a2"}},
		{"patient with a tie", store.AuditFilter{PatientRef: "Patient/3"}, []string{"tie-b", "tie-a"}},
		{"agent", store.AuditFilter{AgentID: "pacs"}, []string{"tie-b", "tie-a", "a4", "a3"}},
		{"action", store.AuditFilter{Action: store.AuditActionRead}, []string{"tie-b", "tie-a", "a5", "a1"}},
		{"since is inclusive", store.AuditFilter{Since: auditAt(2)}, []string{"tie-b", "tie-a", "a5", "a4", "a3"}},
		{"until is exclusive", store.AuditFilter{Until: auditAt(2)}, []string{"a2", "a1"}},
		{"since and until", store.AuditFilter{Since: auditAt(1), Until: auditAt(3)}, []string{"a3", "a2"}},
		{"patient and agent", store.AuditFilter{PatientRef: "Patient/2", AgentID: "ris"}, []string{"a2"}},
		{"patient and since", store.AuditFilter{PatientRef: "Patient/2", Since: auditAt(2)}, []string{"a4", "a3"}},
		{"patient and action", store.AuditFilter{PatientRef: "Patient/2", Action: store.AuditActionUpdate}, []string{"a4"}},
		{"unknown patient", store.AuditFilter{PatientRef: "Patient/404"}, []string{}},
		{"unknown action", store.AuditFilter{Action: "X"}, []string{}},
		{"since after until", store.AuditFilter{Since: auditAt(3), Until: auditAt(1)}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, next, err := s.SearchAudit(ctxT(t), "acme", tt.f)
			require.NoError(t, err)
			assert.Equal(t, tt.want, auditIDs(got))
			assert.Empty(t, next)
			for _, a := range got {
				assert.Equal(t, "acme", a.Domain)
			}
		})
	}

	t.Run("cursors", func(t *testing.T) {
		ctx := ctxT(t)
		_, _, err := s.SearchAudit(ctx, "acme", store.AuditFilter{After: "garbage"})
		assert.ErrorIs(t, err, store.ErrInvalid)
		// A SearchReports cursor is not a SearchAudit one.
		create(t, s, newReport("acme", "r1", "A1", base))
		create(t, s, newReport("acme", "r2", "A2", base))
		_, reportCursor, err := s.SearchReports(ctx, "acme", store.ReportFilter{Limit: 1})
		require.NoError(t, err)
		require.NotEmpty(t, reportCursor)
		_, _, err = s.SearchAudit(ctx, "acme", store.AuditFilter{After: reportCursor})
		assert.ErrorIs(t, err, store.ErrInvalid)
		_, auditCursor, err := s.SearchAudit(ctx, "acme", store.AuditFilter{Limit: 1})
		require.NoError(t, err)
		_, _, err = s.SearchReports(ctx, "acme", store.ReportFilter{After: auditCursor})
		assert.ErrorIs(t, err, store.ErrInvalid)
	})

	got, _, err := s.SearchAudit(ctxT(t), "empty-domain", store.AuditFilter{})
	require.NoError(t, err)
	assert.Empty(t, got)
}

func testAuditSearchPaging(t *testing.T, s store.Store) {
	for _, limit := range []int{1, 2, 3, 7, 100} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			domain := fmt.Sprintf("paging-%d", limit)
			auditFixture(t, s, domain)
			var (
				all   []string
				after string
				pages int
			)
			for {
				page, next, err := s.SearchAudit(ctxT(t), domain, store.AuditFilter{Limit: limit, After: after})
				require.NoError(t, err)
				require.LessOrEqual(t, len(page), limit)
				all = append(all, auditIDs(page)...)
				pages++
				require.Less(t, pages, 20, "paging does not end")
				if next == "" {
					break
				}
				// Records made while a client pages are newer than its
				// cursor: they neither shift nor repeat the pages.
				if pages == 1 {
					record(t, s, auditRecord(domain, "late", auditAt(60)))
				}
				after = next
			}
			assert.Equal(t, auditAll, all)
			assert.Equal(t, (len(auditAll)+limit-1)/limit, pages, "no empty last page")
		})
	}

	t.Run("filtered paging continues the filter", func(t *testing.T) {
		auditFixture(t, s, "filtered")
		for _, tt := range []struct {
			f    store.AuditFilter
			want []string
		}{
			{store.AuditFilter{PatientRef: "Patient/2"}, []string{"a4", "a3", "a2"}},
			{store.AuditFilter{PatientRef: "Patient/3"}, []string{"tie-b", "tie-a"}},
			{store.AuditFilter{AgentID: "pacs", Since: auditAt(3)}, []string{"tie-b", "tie-a", "a4"}},
		} {
			var all []string
			f := tt.f
			f.Limit = 1
			for range 10 {
				page, next, err := s.SearchAudit(ctxT(t), "filtered", f)
				require.NoError(t, err)
				all = append(all, auditIDs(page)...)
				if next == "" {
					break
				}
				f.After = next
			}
			assert.Equal(t, tt.want, all, "%+v", tt.f)
		}
	})

	t.Run("limits", func(t *testing.T) {
		domain := "many"
		for i := range store.DefaultSearchLimit + 1 {
			record(t, s, auditRecord(domain, fmt.Sprintf("m%03d", i), auditAt(i)))
		}
		page, next, err := s.SearchAudit(ctxT(t), domain, store.AuditFilter{})
		require.NoError(t, err)
		assert.Len(t, page, store.DefaultSearchLimit, "0 is the default page size")
		assert.NotEmpty(t, next)
		page, next, err = s.SearchAudit(ctxT(t), domain, store.AuditFilter{Limit: store.MaxSearchLimit + 1})
		require.NoError(t, err)
		assert.Len(t, page, store.DefaultSearchLimit+1)
		assert.Empty(t, next)
	})
}

func testAuditConcurrentRecords(t *testing.T, s store.Store) {
	recordConcurrently(t, []store.Store{s}, 16)
}

// recordConcurrently has n goroutines record one audit record each through
// stores (round robin), letting the store make the ids, and checks that
// every store then finds all of them.
func recordConcurrently(t *testing.T, stores []store.Store, n int) {
	t.Helper()
	var (
		mu   sync.Mutex
		want []string
		wg   sync.WaitGroup
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := auditRecord("acme", "", base.Add(time.Duration(i)*time.Second))
			a.PatientRefs = []string{"Patient/1"}
			if err := stores[i%len(stores)].RecordAudit(context.Background(), a); err != nil {
				t.Errorf("record %d: %v", i, err)
				return
			}
			mu.Lock()
			want = append([]string{a.ID}, want...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	require.Len(t, want, n)
	for i, s := range stores {
		got, next, err := s.SearchAudit(ctxT(t), "acme", store.AuditFilter{PatientRef: "Patient/1", Limit: n})
		require.NoError(t, err)
		assert.ElementsMatch(t, want, auditIDs(got), "store %d", i)
		assert.Empty(t, next)
		for j := 1; j < len(got); j++ {
			assert.True(t, got[j-1].Recorded.After(got[j].Recorded), "newest first")
		}
	}
}

func testAuditRetention(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	old, cutoff := base.Add(-48*time.Hour), base.Add(-24*time.Hour)
	for _, a := range []*store.AuditRecord{
		auditRecord("acme", "old-1", old),
		auditRecord("acme", "old-2", old.Add(time.Second)),
		auditRecord("northside", "old-3", old),
		auditRecord("acme", "at-cutoff", cutoff),
		auditRecord("acme", "new", base),
	} {
		a.PatientRefs = []string{"Patient/1"}
		record(t, s, a)
	}

	// Purging PHI leaves the audit trail alone: it is kept longer.
	_, err := s.PurgeBefore(ctx, base.Add(time.Hour))
	require.NoError(t, err)
	_, err = s.AuditEvent(ctx, "acme", "old-1")
	require.NoError(t, err, "PurgeBefore does not touch audit records")

	n, err := s.PurgeAuditBefore(ctx, cutoff)
	require.NoError(t, err)
	assert.Equal(t, 3, n, "old records of every domain")
	for _, id := range []string{"old-1", "old-2"} {
		_, err := s.AuditEvent(ctx, "acme", id)
		assert.ErrorIs(t, err, store.ErrNotFound, id)
	}
	_, err = s.AuditEvent(ctx, "northside", "old-3")
	assert.ErrorIs(t, err, store.ErrNotFound)
	got, _, err := s.SearchAudit(ctx, "acme", store.AuditFilter{PatientRef: "Patient/1"})
	require.NoError(t, err)
	assert.Equal(t, []string{"new", "at-cutoff"}, auditIDs(got), "the patient index lost the purged records too")

	n, err = s.PurgeAuditBefore(ctx, cutoff)
	require.NoError(t, err)
	assert.Equal(t, 0, n, "purging is idempotent")

	// The ids of purged records are free again (nothing of them is left).
	record(t, s, auditRecord("acme", "old-1", base))
}

func claimJTI(t *testing.T, s store.Store, issuer, jti string, expires time.Time) bool {
	t.Helper()
	fresh, err := s.ClaimJTI(ctxT(t), issuer, jti, expires)
	require.NoError(t, err)
	return fresh
}

func testClaimJTI(t *testing.T, s store.Store) {
	later := time.Now().Add(time.Hour)
	assert.True(t, claimJTI(t, s, "client-1", "j1", later), "the first claim is fresh")
	assert.False(t, claimJTI(t, s, "client-1", "j1", later), "the second is a replay")
	assert.False(t, claimJTI(t, s, "client-1", "j1", later.Add(time.Hour)), "also with another expiry")
	assert.True(t, claimJTI(t, s, "client-2", "j1", later), "jtis are per issuer")
	assert.True(t, claimJTI(t, s, "client-1", "j2", later))

	for _, tt := range []struct {
		name, issuer, jti string
		expires           time.Time
	}{
		{"no issuer", "", "j", later},
		{"no jti", "client-1", "", later},
		{"no expiry", "client-1", "j", time.Time{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fresh, err := s.ClaimJTI(ctxT(t), tt.issuer, tt.jti, tt.expires)
			assert.ErrorIs(t, err, store.ErrInvalid)
			assert.False(t, fresh)
		})
	}
}

func testClaimJTIExpiry(t *testing.T, s store.Store) {
	now := time.Now()
	// An expired claim protects nothing: the jti can be claimed again.
	assert.True(t, claimJTI(t, s, "client-1", "past", now.Add(-time.Second)))
	assert.True(t, claimJTI(t, s, "client-1", "past", now.Add(-time.Second)))
	assert.True(t, claimJTI(t, s, "client-1", "past", now.Add(time.Hour)), "an expired claim is taken over")
	assert.False(t, claimJTI(t, s, "client-1", "past", now.Add(time.Hour)), "and then protects until its new expiry")

	// Long-expired claims are deleted by later claims; the ones still
	// protecting survive that.
	assert.True(t, claimJTI(t, s, "client-1", "ancient", now.Add(-24*time.Hour)))
	assert.True(t, claimJTI(t, s, "client-1", "other", now.Add(time.Hour)))
	assert.False(t, claimJTI(t, s, "client-1", "past", now.Add(time.Hour)))

	// Expiry is judged by the current time: a claim expiring shortly is
	// claimable once it has passed.
	soon := time.Now().Add(300 * time.Millisecond)
	assert.True(t, claimJTI(t, s, "client-1", "soon", soon))
	require.Eventually(t, func() bool {
		fresh, err := s.ClaimJTI(ctxT(t), "client-1", "soon", soon)
		return err == nil && fresh
	}, 15*time.Second, 20*time.Millisecond, "the claim expires")
	assert.False(t, time.Now().Before(soon), "not before its expiry")
}

// raceJTI has n goroutines claim one jti through stores (round robin) and
// checks that exactly one claim is fresh; first with no earlier claim, then
// over an expired one.
func raceJTI(t *testing.T, stores []store.Store, n int) {
	t.Helper()
	race := func(jti string) int {
		var (
			mu    sync.Mutex
			fresh int
			wg    sync.WaitGroup
		)
		expires := time.Now().Add(time.Hour)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := stores[i%len(stores)].ClaimJTI(context.Background(), "client-1", jti, expires)
				if err != nil {
					t.Errorf("claim %d: %v", i, err)
					return
				}
				if ok {
					mu.Lock()
					fresh++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return fresh
	}
	assert.Equal(t, 1, race("new"), "one fresh claim of a new jti")
	require.True(t, claimJTI(t, stores[0], "client-1", "expired", time.Now().Add(-time.Second)))
	assert.Equal(t, 1, race("expired"), "one fresh claim over an expired one")
}

func testClaimJTIRace(t *testing.T, s store.Store) {
	raceJTI(t, []store.Store{s}, 12)
}

func replicas(t *testing.T, open func(ctx context.Context) (store.Store, error), n int) []store.Store {
	t.Helper()
	var stores []store.Store
	for range n {
		s, err := open(ctxT(t))
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, s.Close()) })
		stores = append(stores, s)
	}
	return stores
}

func testReplicasClaimJTI(t *testing.T, open func(ctx context.Context) (store.Store, error)) {
	raceJTI(t, replicas(t, open, 3), 12)
}

func testReplicasAudit(t *testing.T, open func(ctx context.Context) (store.Store, error)) {
	recordConcurrently(t, replicas(t, open, 3), 15)
}
