package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// ClaimDelivery leases the next due appointment's newest pending version.
// See store.Deliveries.
//
// The first statement locks the first due queue row that no other
// transaction holds (SKIP LOCKED: concurrent claimers take different
// appointments instead of queueing). PostgreSQL re-checks the WHERE clause
// on the newest version of a row it locks, so an appointment another
// replica leased and committed a moment ago is not taken again. The
// statements after it run with the lock held and, at READ COMMITTED, see
// everything committed before it: which versions are pending is read
// fresh, not from the first statement's snapshot. New versions of the
// appointment lock the same row (insertVersion), so none can commit
// between the choice of the newest and the superseding of the others.
func (s *Store) ClaimDelivery(ctx context.Context, worker string, lease time.Duration, now time.Time) (_ *store.Report, err error) {
	defer store.Wrap(&err, "postgres.ClaimDelivery(%q)", worker)
	if err := sqlutil.CheckClaim(worker, lease); err != nil {
		return nil, err
	}
	now = sqlutil.Time(now)
	until := sqlutil.Time(now.Add(lease))
	var claimed *store.Report
	err = s.write(ctx, func(tx pgx.Tx) error {
		// A queue whose due_at points at nothing pending would be a bug;
		// rather than wedge the queue on it, repair it and look on.
		for range 3 {
			var domain, appt string
			err := tx.QueryRow(ctx, `SELECT domain, appointment_id FROM delivery_queues
				WHERE due_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)
				ORDER BY due_at, domain, appointment_id LIMIT 1
				FOR UPDATE SKIP LOCKED`, now).Scan(&domain, &appt)
			if err != nil {
				return notFound(err, "due delivery")
			}
			var (
				id  string
				v   int
				seq int64
			)
			err = tx.QueryRow(ctx, `SELECT report_id, version, queue_seq FROM report_versions
				WHERE domain = $1 AND appointment_id = $2 AND state = 'pending'
				ORDER BY queue_seq DESC LIMIT 1`, domain, appt).Scan(&id, &v, &seq)
			if errors.Is(err, pgx.ErrNoRows) {
				if _, err := tx.Exec(ctx, `UPDATE delivery_queues SET due_at = NULL
					WHERE domain = $1 AND appointment_id = $2`, domain, appt); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return err
			}
			// QUBS keeps one report per appointment: older pending versions,
			// of this report or another, would be overwritten at once, or,
			// arriving late, overwrite the newer one. They are never sent.
			// An expired lease on one of them is lost with it: its worker's
			// late calls find it superseded.
			if _, err := tx.Exec(ctx, `UPDATE report_versions SET state = 'superseded', last_error = $1
				WHERE domain = $2 AND appointment_id = $3 AND state = 'pending' AND queue_seq < $4`,
				sqlutil.SupersededBy(id, v), domain, appt, seq); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE report_versions SET attempts = attempts + 1
				WHERE domain = $1 AND report_id = $2 AND version = $3`, domain, id, v); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE delivery_queues
				SET leased_report = $1, leased_version = $2, lease_owner = $3, lease_until = $4
				WHERE domain = $5 AND appointment_id = $6`, id, v, worker, until, domain, appt); err != nil {
				return err
			}
			claimed, err = loadVersion(ctx, tx, domain, id, v, true)
			return err
		}
		return store.E(store.KindNotFound, "no due delivery")
	})
	return claimed, err
}

// job is a version's delivery state and its appointment's lease, as a
// fenced call finds them.
type job struct {
	state, appointment string
	holder             sqlutil.Holder
}

// lockJob locks the version's appointment queue for the rest of the
// transaction, the first lock of every change to a job (claims, new
// versions and fenced calls all lock the queue row first, so they cannot
// deadlock on each other), and reads the job under it.
func lockJob(ctx context.Context, tx pgx.Tx, domain, id string, version int) (job, error) {
	var j job
	// A version's appointment never changes, so reading it before the lock
	// is safe.
	err := tx.QueryRow(ctx, `SELECT appointment_id FROM report_versions WHERE domain = $1 AND report_id = $2 AND version = $3`,
		domain, id, version).Scan(&j.appointment)
	if err != nil {
		return j, notFound(err, "report version")
	}
	var (
		report, owner *string
		leased        *int
	)
	err = tx.QueryRow(ctx, `SELECT leased_report, leased_version, lease_owner FROM delivery_queues
		WHERE domain = $1 AND appointment_id = $2 FOR UPDATE`, domain, j.appointment).Scan(&report, &leased, &owner)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return j, err
	}
	if report != nil && leased != nil && owner != nil {
		j.holder = sqlutil.Holder{Report: *report, Version: *leased, Owner: *owner}
	}
	// A new statement at READ COMMITTED: it sees what the lock's previous
	// holder committed, and every state change happens under that lock.
	err = tx.QueryRow(ctx, `SELECT state FROM report_versions WHERE domain = $1 AND report_id = $2 AND version = $3`,
		domain, id, version).Scan(&j.state)
	return j, notFound(err, "report version")
}

// release drops the appointment's lease and points its queue at the newest
// pending version (NULL when none is left). Only the holder calls it (the
// callers checked), so the lease it drops is the caller's own.
func release(ctx context.Context, tx pgx.Tx, domain, appt string) error {
	_, err := tx.Exec(ctx, `UPDATE delivery_queues SET
		due_at = (SELECT next_attempt_at FROM report_versions
			WHERE domain = delivery_queues.domain AND appointment_id = delivery_queues.appointment_id AND state = 'pending'
			ORDER BY queue_seq DESC LIMIT 1),
		leased_report = NULL, leased_version = NULL, lease_owner = NULL, lease_until = NULL
		WHERE domain = $1 AND appointment_id = $2`, domain, appt)
	return err
}

// RecordUpload records an artifact's successful upload, if worker holds the
// version's lease. See store.Deliveries.
func (s *Store) RecordUpload(ctx context.Context, worker, domain, id string, version, index int, qubsGUID string, at time.Time) (err error) {
	defer store.Wrap(&err, "postgres.RecordUpload(%q, %q, %d, %d)", domain, id, version, index)
	return s.recordArtifact(ctx, worker, domain, id, version, index, `UPDATE report_artifacts SET qubs_guid = $5, uploaded_at = $6
		WHERE domain = $1 AND report_id = $2 AND version = $3 AND idx = $4`, qubsGUID, sqlutil.Time(at))
}

// RecordUploadSlot records an artifact's slot before its PUT. See
// store.Deliveries.
func (s *Store) RecordUploadSlot(ctx context.Context, worker, domain, id string, version, index int, qubsGUID string) (err error) {
	defer store.Wrap(&err, "postgres.RecordUploadSlot(%q, %q, %d, %d)", domain, id, version, index)
	// An uploaded artifact keeps its record: the row still counts as
	// found, the update just changes nothing.
	return s.recordArtifact(ctx, worker, domain, id, version, index, `UPDATE report_artifacts
		SET qubs_guid = CASE WHEN uploaded_at IS NULL THEN $5 ELSE qubs_guid END
		WHERE domain = $1 AND report_id = $2 AND version = $3 AND idx = $4`, qubsGUID)
}

// recordArtifact runs update ($1..$4 the artifact's key, then args) if
// worker holds the version's lease.
func (s *Store) recordArtifact(ctx context.Context, worker, domain, id string, version, index int, update string, args ...any) error {
	if err := sqlutil.CheckWorker(worker); err != nil {
		return err
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		j, err := lockJob(ctx, tx, domain, id, version)
		if err != nil {
			return err
		}
		if err := sqlutil.CheckPendingHolder(worker, id, version, j.state, j.holder); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, update, append([]any{domain, id, version, index}, args...)...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return store.E(store.KindNotFound, "no such artifact")
		}
		return nil
	})
}

// RenewLease extends worker's lease and says whether a newer version of the
// appointment waits. See store.Deliveries.
func (s *Store) RenewLease(ctx context.Context, worker, domain, id string, version int, lease time.Duration, now time.Time) (newer bool, err error) {
	defer store.Wrap(&err, "postgres.RenewLease(%q, %q, %d)", domain, id, version)
	if err := sqlutil.CheckClaim(worker, lease); err != nil {
		return false, err
	}
	err = s.write(ctx, func(tx pgx.Tx) error {
		j, err := lockJob(ctx, tx, domain, id, version)
		if err != nil {
			return err
		}
		if err := sqlutil.CheckPendingHolder(worker, id, version, j.state, j.holder); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE delivery_queues SET lease_until = $3
			WHERE domain = $1 AND appointment_id = $2`, domain, j.appointment, sqlutil.Time(now.Add(lease))); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM report_versions n, report_versions v
			WHERE v.domain = $1 AND v.report_id = $2 AND v.version = $3
			AND n.domain = v.domain AND n.appointment_id = v.appointment_id AND n.state = 'pending' AND n.queue_seq > v.queue_seq)`,
			domain, id, version).Scan(&newer)
	})
	return newer, err
}

// finish runs the common part of Complete, Retry and Fail: lock and read
// the job, let decide say whether to go on (noop: the call is a harmless
// repeat), check that worker holds the lease, apply update (a statement
// ending in its SET clause, with args), then release the lease.
func (s *Store) finish(ctx context.Context, worker, domain, id string, version int,
	decide func(state string) (noop bool, err error), update string, args ...any) error {
	if err := sqlutil.CheckWorker(worker); err != nil {
		return err
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		j, err := lockJob(ctx, tx, domain, id, version)
		if err != nil {
			return err
		}
		if noop, err := decide(j.state); noop || err != nil {
			return err
		}
		if err := sqlutil.CheckHolder(worker, id, version, j.holder); err != nil {
			return err
		}
		n := len(args)
		if _, err := tx.Exec(ctx, update+fmt.Sprintf(" WHERE domain = $%d AND report_id = $%d AND version = $%d", n+1, n+2, n+3),
			append(args, domain, id, version)...); err != nil {
			return err
		}
		return release(ctx, tx, domain, j.appointment)
	})
}

// CompleteDelivery marks a version delivered. See store.Deliveries.
func (s *Store) CompleteDelivery(ctx context.Context, worker, domain, id string, version int, reportGUID string, at time.Time) (err error) {
	defer store.Wrap(&err, "postgres.CompleteDelivery(%q, %q, %d)", domain, id, version)
	return s.finish(ctx, worker, domain, id, version, func(state string) (bool, error) {
		switch state {
		case store.DeliveryPending:
			return false, nil
		case store.DeliveryDelivered:
			return true, nil
		}
		return false, store.E(store.KindConflict, "version is %s", state)
	}, `UPDATE report_versions SET state = 'delivered', report_guid = $1, delivered_at = $2`, reportGUID, sqlutil.Time(at))
}

// RetryDelivery makes a version due again later. See store.Deliveries.
func (s *Store) RetryDelivery(ctx context.Context, worker, domain, id string, version int, lastError string, next time.Time) (err error) {
	defer store.Wrap(&err, "postgres.RetryDelivery(%q, %q, %d)", domain, id, version)
	return s.finish(ctx, worker, domain, id, version, func(state string) (bool, error) {
		if state == store.DeliveryPending {
			return false, nil
		}
		return false, store.E(store.KindConflict, "version is %s", state)
	}, `UPDATE report_versions SET last_error = $1, next_attempt_at = $2`, lastError, sqlutil.Time(next))
}

// FailDelivery marks a version permanently failed. See store.Deliveries.
func (s *Store) FailDelivery(ctx context.Context, worker, domain, id string, version int, lastError string) (err error) {
	defer store.Wrap(&err, "postgres.FailDelivery(%q, %q, %d)", domain, id, version)
	return s.finish(ctx, worker, domain, id, version, func(state string) (bool, error) {
		switch state {
		case store.DeliveryPending:
			return false, nil
		case store.DeliveryFailed:
			return true, nil
		}
		return false, store.E(store.KindConflict, "version is %s", state)
	}, `UPDATE report_versions SET state = 'failed', last_error = $1`, lastError)
}

// DeliveryStats returns per-domain delivery figures. See store.Deliveries.
func (s *Store) DeliveryStats(ctx context.Context) (_ []store.DeliveryStats, err error) {
	defer store.Wrap(&err, "postgres.DeliveryStats")
	rows, err := s.pool.Query(ctx, `SELECT domain,
		count(*) FILTER (WHERE state = 'pending'),
		min(created_at) FILTER (WHERE state = 'pending'),
		count(*) FILTER (WHERE state = 'failed')
		FROM report_versions WHERE state IN ('pending', 'failed') GROUP BY domain ORDER BY domain`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.DeliveryStats
	for rows.Next() {
		var (
			d      store.DeliveryStats
			oldest *time.Time
		)
		if err := rows.Scan(&d.Domain, &d.Pending, &oldest, &d.Failed); err != nil {
			return nil, err
		}
		if oldest != nil {
			t := oldest.UTC()
			d.OldestPending = &t
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// PendingDeliveries counts pending versions. See store.Deliveries.
func (s *Store) PendingDeliveries(ctx context.Context) (n int, err error) {
	defer store.Wrap(&err, "postgres.PendingDeliveries")
	err = s.pool.QueryRow(ctx, `SELECT count(*) FROM report_versions WHERE state = 'pending'`).Scan(&n)
	return n, err
}
