package sqlstore_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
)

// BenchmarkSearchWorklistPage is the store's part of an index-served
// worklist page: 100 rows of 10,000 with their ServiceRequests (about
// 1.5 KB each, as the mapping writes them), in _lastUpdated order, with
// and without the appointments kept beside them. cpu-ns/op is the
// process's CPU per page; on PostgreSQL, pg-cpu-ns/op is the server's.
func BenchmarkSearchWorklistPage(b *testing.B) {
	const n = 10_000
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			st := e.open(b)
			ctx := context.Background()
			now := time.Now().UTC().Truncate(time.Second)
			ok, err := st.TakeWorklistLease(ctx, "acme", "bench", time.Hour, now)
			require.NoError(b, err)
			require.True(b, ok)
			filler := bytes.Repeat([]byte("x"), 1400)
			rows := make([]store.WorklistRow, 0, 500)
			for i := range n {
				id := fmt.Sprintf("A%07d", i)
				occ := now.Add(time.Duration(i) * time.Minute)
				rows = append(rows, store.WorklistRow{Domain: "acme", AppointmentID: id, ID: id,
					Patient: fmt.Sprintf("Patient/%d", i%3000), Status: "active", Priority: "routine",
					PriorityRank: store.WorklistPriorityRank("routine"), OccurrenceStart: &occ, OccurrenceEnd: &occ,
					Appointment: fmt.Appendf(nil, `{"appointmentId":%q,"notes":%q}`, id, filler),
					Resource:    fmt.Appendf(nil, `{"resourceType":"ServiceRequest","id":%q,"note":%q}`, id, filler),
					Digest:      id})
				if len(rows) == cap(rows) {
					_, err := st.ApplyWorklist(ctx, "acme", "bench", time.Hour, rows, now.Add(time.Duration(i)*time.Millisecond))
					require.NoError(b, err)
					rows = rows[:0]
				}
			}
			_, err = st.FinishWorklistSync(ctx, "acme", "bench", now, now)
			require.NoError(b, err)
			for _, withAppt := range []bool{false, true} {
				b.Run(fmt.Sprintf("appointment=%v", withAppt), func(b *testing.B) {
					q := store.WorklistQuery{Domain: "acme", Count: 100, ResourceOnly: !withAppt,
						Sort: []store.WorklistSortKey{{Field: store.WorklistFieldLastUpdated, Desc: true}}}
					b.ResetTimer()
					cpu0, pg0 := rusage(), pgtest.ServerCPU()
					for range b.N {
						p, err := st.SearchWorklist(ctx, q)
						if err != nil || len(p.Rows) != 100 {
							b.Fatal(err, len(p.Rows))
						}
					}
					b.ReportMetric(float64(rusage()-cpu0)/float64(b.N), "cpu-ns/op")
					reportServerCPU(b, e.name, pg0)
				})
			}
		})
	}
}
