package worklist_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/worklist"
)

// BenchmarkSync10k walks a worklist of about 10,000 studies from the
// simulator over HTTP into SQLite: first a walk where all arrive, then
// one where nothing changed (the steady state), with the QUBS calls each
// costs.
func BenchmarkSync10k(b *testing.B) {
	sim, client := simClient(b, qubssim.Options{Seed: 1, Appointments: 12_000})
	domain := sim.Domains()[0]
	b.Logf("%d pending studies in %s", len(sim.PendingIDs(domain)), domain)
	z := zones(b, sim)
	b.Run("first", func(b *testing.B) {
		var calls int
		for range b.N {
			b.StopTimer()
			st := engines["sqlite"](b)
			s := &worklist.Syncer{Store: st, QUBS: client, Zones: z, Owner: "bench"}
			b.StartTimer()
			res, err := s.SyncOnce(context.Background(), domain)
			require.NoError(b, err)
			calls += res.Calls
		}
		b.ReportMetric(float64(calls)/float64(b.N), "qubs-calls/op")
	})
	b.Run("unchanged", func(b *testing.B) {
		st := engines["sqlite"](b)
		s := &worklist.Syncer{Store: st, QUBS: client, Zones: z, Owner: "bench"}
		_, err := s.SyncOnce(context.Background(), domain)
		require.NoError(b, err)
		var calls int
		b.ResetTimer()
		for range b.N {
			res, err := s.SyncOnce(context.Background(), domain)
			require.NoError(b, err)
			calls += res.Calls
		}
		b.ReportMetric(float64(calls)/float64(b.N), "qubs-calls/op")
	})
}
