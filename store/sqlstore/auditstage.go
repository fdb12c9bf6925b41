package sqlstore

import (
	"context"
	"sync"
)

// auditStagedRows is how many patient rows gather in audit_patients_staged
// before they are moved into audit_patients (SQLite, migration 0008): a
// search by patient scans them all (8 ms of CPU for 32,000 rows, 15 ms for
// 64,000; BenchmarkSearchAuditStaged), and a move writes each leaf it
// touches once for all the rows gathered for it (a worklist page's record:
// 2.0-2.4 ms of CPU written directly, 0.77-0.84 ms staged by 16,384 rows,
// 0.55-0.61 ms by 65,536; BenchmarkRecordAudits/sqlite/page).
const auditStagedRows = 32768

// auditStaging is the count of staged audit patient rows, kept beside the
// database so that a write need not count them, and the move.
//
// It relies on the write transactions being serial, as SQLite's one write
// connection makes them: the count a transaction works on is the last
// committed one, and becomes the committed one when it commits. A
// PostgreSQL Store has none (its patient rows go straight into
// audit_patients; docs/store.md says why).
type auditStaging struct {
	mu sync.Mutex
	// staged is the number of rows in audit_patients_staged after the
	// last commit; -1 when not known (at first use, after a rollback).
	staged int
	// open and pending are the count inside the open transaction.
	open    bool
	pending int
	// moveAt is when they are moved: auditStagedRows, but for tests.
	moveAt int
}

func newAuditStaging() *auditStaging {
	return &auditStaging{staged: -1, moveAt: auditStagedRows}
}

// table is where a record's patient rows are written.
func (g *auditStaging) table() string {
	if g == nil {
		return "audit_patients"
	}
	return "audit_patients_staged"
}

// added counts n rows staged in tx, and moves every staged row into
// audit_patients, in tx, once moveAt have gathered. A nil g (PostgreSQL)
// has nothing to do.
func (g *auditStaging) added(ctx context.Context, tx *tx, n int) error {
	if g == nil || n == 0 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		g.open, g.pending = true, g.staged
		tx.afterward(g.settle)
	}
	if g.pending < 0 {
		// The count includes the n rows just staged.
		if err := tx.queryRow(ctx, `SELECT count(*) FROM audit_patients_staged`).Scan(&g.pending); err != nil {
			return err
		}
	} else {
		g.pending += n
	}
	if g.pending < g.moveAt {
		return nil
	}
	// In key order within a domain, so that each leaf of audit_patients is
	// visited once for all of its new rows. patient_ref leads the sort: it
	// tells most rows apart at its first column, where SQLite's sorter
	// compares text without decoding the rest of the record (with domain
	// first, equal in almost every pair, every comparison went the slow
	// way; the sort's CPU halved in BenchmarkRecordAudits). Several domains
	// then interleave, each still in its own key order. OR IGNORE, unlike
	// ON CONFLICT DO NOTHING, cannot abort half-way (NOT NULL is ignored
	// too, and the staged columns are NOT NULL anyway), so SQLite keeps no
	// statement journal of the pages the move changes (15 % of its CPU).
	if _, err := tx.exec(ctx, `INSERT OR IGNORE INTO audit_patients (domain, patient_ref, recorded, audit_id)
		SELECT domain, patient_ref, recorded, audit_id FROM audit_patients_staged
		ORDER BY patient_ref, domain, recorded, audit_id`); err != nil {
		return err
	}
	if _, err := tx.exec(ctx, `DELETE FROM audit_patients_staged`); err != nil {
		return err
	}
	g.pending = 0
	return nil
}

// settle ends the transaction's count: kept if it committed, unknown (to
// be counted again) if not.
func (g *auditStaging) settle(committed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = false
	if committed {
		g.staged = g.pending
	} else {
		g.staged = -1
	}
}

// purged makes the count unknown once tx ends: the retention purge in tx
// deleted staged rows, and a count left high would make the next move
// come early.
func (g *auditStaging) purged(tx *tx) {
	tx.afterward(func(bool) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.staged = -1
	})
}
