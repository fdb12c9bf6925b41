package sqlstore

import (
	"context"
	"database/sql"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// SetAuditMoveAt makes s move staged audit patient rows into
// audit_patients once n have gathered, so that tests cover both tables.
// s must stage them (SQLite).
func SetAuditMoveAt(s *Store, n int) {
	g := s.d.auditStaging()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.moveAt = n
}

// WriteBlobs writes and commits the blobs of r's artifacts as a new
// version's write does beside its own transaction (PostgreSQL), and
// returns their ids: what a crash between the two commits leaves.
func WriteBlobs(ctx context.Context, s *Store, r *store.Report) ([]string, error) {
	b, err := s.startBlobs(ctx, r)
	if err != nil {
		return nil, err
	}
	return b.wait(ctx)
}

// SweepBlobs runs the sweep of unnamed blobs that Open runs.
func SweepBlobs(ctx context.Context, s *Store) (int, error) { return s.sweepBlobs(ctx) }

// DB is s's write pool, for tests that look at or age rows.
func DB(s *Store) *sql.DB { return s.w }
