package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// testReportOrderAndCount: reports sorted by their last update either
// way, paged without repeats or gaps, and counted with the search's
// filter.
func testReportOrderAndCount(t *testing.T, s store.Store) {
	searchFixture(t, s)
	// r2 is updated last, r4 before it: by update, r1 r3 r5 r4 r2.
	update(t, s, newReport("acme", "r4", "A3", base.Add(time.Hour)))
	update(t, s, newReport("acme", "r2", "A2", base.Add(2*time.Hour)))
	byUpdate := []string{"r1", "r3", "r5", "r4", "r2"}
	for _, tc := range []struct {
		order store.ReportOrder
		want  []string
	}{
		{store.ReportsByUpdate, byUpdate},
		{store.ReportsByUpdateDesc, reversed(byUpdate)},
		{store.ReportsByCreation, []string{"r1", "r2", "r3", "r4", "r5"}},
	} {
		for _, limit := range []int{1, 2, 100} {
			var all []string
			after := ""
			for pages := 0; ; pages++ {
				require.Less(t, pages, 10, "paging does not end")
				page, next, err := s.SearchReports(ctxT(t), "acme", store.ReportFilter{Order: tc.order, Limit: limit, After: after})
				require.NoError(t, err)
				all = append(all, ids(page)...)
				if next == "" {
					break
				}
				after = next
			}
			assert.Equal(t, tc.want, all, "order %d, limit %d", tc.order, limit)
		}
	}
	for _, tc := range []struct {
		f    store.ReportFilter
		want int
	}{
		{store.ReportFilter{}, 5},
		// r2's latest version names no patient: filters see latest versions.
		{store.ReportFilter{PatientRefs: []string{"Patient/1"}, Limit: 1, After: "ignored"}, 1},
		{store.ReportFilter{AppointmentIDs: []string{"A404"}}, 0},
	} {
		n, err := s.CountReports(ctxT(t), "acme", tc.f)
		require.NoError(t, err)
		assert.Equal(t, tc.want, n, "%+v", tc.f)
	}
	n, err := s.CountReports(ctxT(t), "northside", store.ReportFilter{})
	require.NoError(t, err)
	assert.Equal(t, 1, n, "per domain")
}

// testAuditOrderAndCount: the audit trail oldest first too, paged, and
// counted with the search's filter.
func testAuditOrderAndCount(t *testing.T, s store.Store) {
	auditFixture(t, s, "order")
	var all []string
	after := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10, "paging does not end")
		page, next, err := s.SearchAudit(ctxT(t), "order", store.AuditFilter{OldestFirst: true, Limit: 2, After: after})
		require.NoError(t, err)
		all = append(all, auditIDs(page)...)
		if next == "" {
			break
		}
		after = next
	}
	assert.Equal(t, reversed(auditAll), all)
	n, err := s.CountAudit(ctxT(t), "order", store.AuditFilter{Limit: 1})
	require.NoError(t, err)
	assert.Equal(t, len(auditAll), n)
	n, err = s.CountAudit(ctxT(t), "no-such-domain", store.AuditFilter{})
	require.NoError(t, err)
	assert.Zero(t, n)
}

func reversed(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}
