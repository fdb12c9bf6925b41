package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// ClaimDelivery leases the next due appointment's newest pending version.
// See store.Deliveries.
//
// SQLite: every write transaction holds the single write lock, so the
// choice of the appointment and its lease are atomic with respect to every
// other claim, new version and completion, in this process and in any
// other on the same file.
//
// PostgreSQL: the first statement locks the first due queue row that no
// other transaction holds (SKIP LOCKED: concurrent claimers take different
// appointments instead of queueing). PostgreSQL re-checks the WHERE clause
// on the newest version of a row it locks, so an appointment another
// replica leased and committed a moment ago is not taken again. The
// statements after it run with the lock held and, at READ COMMITTED, see
// everything committed before it: which versions are pending is read
// fresh, not from the first statement's snapshot. New versions of the
// appointment lock the same row (insertVersion), so none can commit
// between the choice of the newest and the superseding of the others.
func (s *Store) ClaimDelivery(ctx context.Context, worker string, lease time.Duration, now time.Time, held store.Held) (_ *store.Report, err error) {
	defer s.wrap(&err, "ClaimDelivery(%q)", worker)
	if err := sqlutil.CheckClaim(worker, lease); err != nil {
		return nil, err
	}
	now = sqlutil.Time(now)
	until := sqlutil.Time(now.Add(lease))
	var claimed *store.Report
	err = s.write(ctx, func(tx *tx) error {
		// A queue whose due_at points at nothing pending would be a bug,
		// and a version whose artifact bytes cannot be read a damaged
		// store; rather than wedge the whole queue on either (the claim
		// would pick the same appointment again and again), set it aside,
		// commit that, and look on.
		for range 3 {
			var domain, appt string
			err := tx.queryRow(ctx, `SELECT domain, appointment_id FROM delivery_queues
				WHERE due_at <= ? AND (lease_until IS NULL OR lease_until <= ?)
				ORDER BY due_at, domain, appointment_id LIMIT 1`+s.d.skipLocked(), s.tm(now), s.tm(now)).Scan(&domain, &appt)
			if errors.Is(err, sql.ErrNoRows) {
				return nil // commit what was set aside; nothing is due
			}
			if err != nil {
				return err
			}
			var (
				id  string
				v   int
				seq int64
			)
			err = tx.queryRow(ctx, `SELECT report_id, version, queue_seq FROM report_versions
				WHERE domain = ? AND appointment_id = ? AND state = 'pending'
				ORDER BY queue_seq DESC LIMIT 1`, domain, appt).Scan(&id, &v, &seq)
			if errors.Is(err, sql.ErrNoRows) {
				if _, err := tx.exec(ctx, `UPDATE delivery_queues SET due_at = NULL
					WHERE domain = ? AND appointment_id = ?`, domain, appt); err != nil {
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
			if _, err := tx.exec(ctx, `UPDATE report_versions SET state = 'superseded', last_error = ?
				WHERE domain = ? AND appointment_id = ? AND state = 'pending' AND queue_seq < ?`,
				sqlutil.SupersededBy(id, v), domain, appt, seq); err != nil {
				return err
			}
			if _, err := tx.exec(ctx, `UPDATE report_versions SET attempts = attempts + 1
				WHERE domain = ? AND report_id = ? AND version = ?`, domain, id, v); err != nil {
				return err
			}
			if _, err := tx.exec(ctx, `UPDATE delivery_queues
				SET leased_report = ?, leased_version = ?, lease_owner = ?, lease_until = ?
				WHERE domain = ? AND appointment_id = ?`, id, v, worker, s.tm(until), domain, appt); err != nil {
				return err
			}
			claimed, err = loadVersion(ctx, tx.q, domain, id, v, true, held)
			var unreadable *artifactFileError
			if !errors.As(err, &unreadable) {
				return err
			}
			claimed = nil
			if err := s.setAsideUnreadable(ctx, tx, domain, id, appt, v, unreadable, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && claimed == nil {
		err = store.E(store.KindNotFound, "no due delivery")
	}
	return claimed, err
}

// setAsideUnreadable takes a version whose artifact bytes could not be
// read off the queue's head, inside the claim's transaction. Bytes that
// are gone or cut (a file deleted by hand, a damaged disk) will not come
// back: the version fails, with a PHI-free reason, and its report-delivery
// event tells subscribers, as any failure does; an operator sees it in
// `deliveries list`. Any other error (an I/O error, a permission) may be
// passing: the version is due again in a minute, its reason recorded.
// Either way the appointment's lease is released and the claim goes on to
// the next appointment.
func (s *Store) setAsideUnreadable(ctx context.Context, tx *tx, domain, id, appt string, v int, e *artifactFileError, now time.Time) error {
	reason := fmt.Sprintf("artifact %d cannot be read from the store: %s", e.index, e.reason())
	var err error
	if e.permanent {
		_, err = tx.exec(ctx, `UPDATE report_versions SET state = 'failed', last_error = ?
			WHERE domain = ? AND report_id = ? AND version = ?`, reason, domain, id, v)
		if err == nil {
			err = s.appendEvents(ctx, tx, deliveryEvent(domain, id, appt, store.EventFailed))
		}
	} else {
		_, err = tx.exec(ctx, `UPDATE report_versions SET last_error = ?, next_attempt_at = ?
			WHERE domain = ? AND report_id = ? AND version = ?`, reason, s.tm(now.Add(unreadableRetry)), domain, id, v)
	}
	if err != nil {
		return err
	}
	return release(ctx, tx, domain, appt)
}

// unreadableRetry is how long a version whose artifact bytes could not be
// read for a possibly passing reason waits before it is claimed again.
const unreadableRetry = time.Minute

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
func (s *Store) lockJob(ctx context.Context, tx *tx, domain, id string, version int) (job, error) {
	var j job
	// A version's appointment never changes, so reading it before the lock
	// is safe.
	err := tx.queryRow(ctx, `SELECT appointment_id FROM report_versions WHERE domain = ? AND report_id = ? AND version = ?`,
		domain, id, version).Scan(&j.appointment)
	if err != nil {
		return j, notFound(err, "report version")
	}
	var (
		report, owner sql.NullString
		leased        sql.NullInt64
	)
	err = tx.queryRow(ctx, `SELECT leased_report, leased_version, lease_owner FROM delivery_queues
		WHERE domain = ? AND appointment_id = ?`+s.d.forUpdate(), domain, j.appointment).Scan(&report, &leased, &owner)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return j, err
	}
	if report.Valid && leased.Valid && owner.Valid {
		j.holder = sqlutil.Holder{Report: report.String, Version: int(leased.Int64), Owner: owner.String}
	}
	// A new statement (at READ COMMITTED on PostgreSQL): it sees what the
	// lock's previous holder committed, and every state change happens
	// under that lock.
	err = tx.queryRow(ctx, `SELECT state FROM report_versions WHERE domain = ? AND report_id = ? AND version = ?`,
		domain, id, version).Scan(&j.state)
	return j, notFound(err, "report version")
}

// lockHeldJob is lockJob for the writes of a lease holder: the version is
// still pending, and worker holds its lease.
func (s *Store) lockHeldJob(ctx context.Context, tx *tx, worker, domain, id string, version int) (job, error) {
	j, err := s.lockJob(ctx, tx, domain, id, version)
	if err != nil {
		return j, err
	}
	return j, sqlutil.CheckPendingHolder(worker, id, version, j.state, j.holder)
}

// release drops the appointment's lease and points its queue at the newest
// pending version (NULL when none is left). Only the holder calls it (the
// callers checked), so the lease it drops is the caller's own.
func release(ctx context.Context, tx *tx, domain, appt string) error {
	_, err := tx.exec(ctx, `UPDATE delivery_queues SET
		due_at = (SELECT next_attempt_at FROM report_versions
			WHERE domain = delivery_queues.domain AND appointment_id = delivery_queues.appointment_id AND state = 'pending'
			ORDER BY queue_seq DESC LIMIT 1),
		leased_report = NULL, leased_version = NULL, lease_owner = NULL, lease_until = NULL
		WHERE domain = ? AND appointment_id = ?`, domain, appt)
	return err
}

// RecordUpload records an artifact's successful upload, if worker holds the
// version's lease. See store.Deliveries.
func (s *Store) RecordUpload(ctx context.Context, worker, domain, id string, version, index int, qubsGUID string, at time.Time) (err error) {
	defer s.wrap(&err, "RecordUpload(%q, %q, %d, %d)", domain, id, version, index)
	return s.recordArtifact(ctx, worker, domain, id, version, index, `UPDATE report_artifacts SET qubs_guid = ?, uploaded_at = ?
		WHERE domain = ? AND report_id = ? AND version = ? AND idx = ?`, qubsGUID, s.tm(sqlutil.Time(at)))
}

// RecordUploadSlot records an artifact's slot before its PUT. See
// store.Deliveries.
func (s *Store) RecordUploadSlot(ctx context.Context, worker, domain, id string, version, index int, qubsGUID string) (err error) {
	defer s.wrap(&err, "RecordUploadSlot(%q, %q, %d, %d)", domain, id, version, index)
	// An uploaded artifact keeps its record: the row still counts as
	// found, the update just changes nothing.
	return s.recordArtifact(ctx, worker, domain, id, version, index, `UPDATE report_artifacts
		SET qubs_guid = CASE WHEN uploaded_at IS NULL THEN ? ELSE qubs_guid END
		WHERE domain = ? AND report_id = ? AND version = ? AND idx = ?`, qubsGUID)
}

// recordArtifact runs update (ending in its WHERE on the artifact's key,
// whose values follow args) if worker holds the version's lease.
func (s *Store) recordArtifact(ctx context.Context, worker, domain, id string, version, index int, update string, args ...any) error {
	if err := sqlutil.CheckWorker(worker); err != nil {
		return err
	}
	return s.write(ctx, func(tx *tx) error {
		if _, err := s.lockHeldJob(ctx, tx, worker, domain, id, version); err != nil {
			return err
		}
		res, err := tx.exec(ctx, update, append(args, domain, id, version, index)...)
		return changedOne(res, err, store.KindNotFound, "no such artifact")
	})
}

// RenewLease extends worker's lease and says whether a newer version of the
// appointment waits. See store.Deliveries.
func (s *Store) RenewLease(ctx context.Context, worker, domain, id string, version int, lease time.Duration, now time.Time) (newer bool, err error) {
	defer s.wrap(&err, "RenewLease(%q, %q, %d)", domain, id, version)
	if err := sqlutil.CheckClaim(worker, lease); err != nil {
		return false, err
	}
	err = s.write(ctx, func(tx *tx) error {
		j, err := s.lockHeldJob(ctx, tx, worker, domain, id, version)
		if err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `UPDATE delivery_queues SET lease_until = ?
			WHERE domain = ? AND appointment_id = ?`, s.tm(sqlutil.Time(now.Add(lease))), domain, j.appointment); err != nil {
			return err
		}
		return tx.queryRow(ctx, `SELECT EXISTS (SELECT 1 FROM report_versions n, report_versions v
			WHERE v.domain = ? AND v.report_id = ? AND v.version = ?
			AND n.domain = v.domain AND n.appointment_id = v.appointment_id AND n.state = 'pending' AND n.queue_seq > v.queue_seq)`,
			domain, id, version).Scan(&newer)
	})
	return newer, err
}

// finish runs the common part of Complete, Retry and Fail: lock and read
// the job, let decide say whether to go on (noop: the call is a harmless
// repeat), check that worker holds the lease, apply update (a statement
// ending in its SET clause, with args), then release the lease.
//
// event, when not "", is the kind of the report-delivery event appended in
// the same transaction (the state the version reached), so subscribers
// are told of every delivery end exactly once.
func (s *Store) finish(ctx context.Context, worker, domain, id string, version int, event string,
	decide func(state string) (noop bool, err error), update string, args ...any) error {
	if err := sqlutil.CheckWorker(worker); err != nil {
		return err
	}
	return s.write(ctx, func(tx *tx) error {
		j, err := s.lockJob(ctx, tx, domain, id, version)
		if err != nil {
			return err
		}
		if noop, err := decide(j.state); noop || err != nil {
			return err
		}
		if err := sqlutil.CheckHolder(worker, id, version, j.holder); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, update+` WHERE domain = ? AND report_id = ? AND version = ?`,
			append(args, domain, id, version)...); err != nil {
			return err
		}
		if err := s.appendEvents(ctx, tx, deliveryEvent(domain, id, j.appointment, event)); err != nil {
			return err
		}
		return release(ctx, tx, domain, j.appointment)
	})
}

// deliveryEvent is the report-delivery event of a version whose delivery
// ended in kind (none for ""). It carries no Resource: a notification
// shows the DiagnosticReport as the bridge serves it when it is sent,
// delivery state included, rather than a copy frozen here.
func deliveryEvent(domain, id, appointment, kind string) []*store.Event {
	if kind == "" {
		return nil
	}
	return []*store.Event{{Domain: domain, Topic: store.EventTopicReportDelivery, Kind: kind,
		FocusType: "DiagnosticReport", FocusID: id, AppointmentID: appointment}}
}

// pendingOr is finish's decide for a call that settles a pending version
// and is a harmless repeat on a version already in state done ("" for
// none); any other state is a conflict.
func pendingOr(done string) func(state string) (noop bool, err error) {
	return func(state string) (bool, error) {
		switch {
		case state == store.DeliveryPending:
			return false, nil
		case done != "" && state == done:
			return true, nil
		}
		return false, store.E(store.KindConflict, "version is %s", state)
	}
}

// CompleteDelivery marks a version delivered. See store.Deliveries.
func (s *Store) CompleteDelivery(ctx context.Context, worker, domain, id string, version int, reportGUID string, at time.Time) (err error) {
	defer s.wrap(&err, "CompleteDelivery(%q, %q, %d)", domain, id, version)
	return s.finish(ctx, worker, domain, id, version, store.EventDelivered, pendingOr(store.DeliveryDelivered),
		`UPDATE report_versions SET state = 'delivered', report_guid = ?, delivered_at = ?`, reportGUID, s.tm(sqlutil.Time(at)))
}

// RetryDelivery makes a version due again later. See store.Deliveries.
func (s *Store) RetryDelivery(ctx context.Context, worker, domain, id string, version int, lastError string, next time.Time) (err error) {
	defer s.wrap(&err, "RetryDelivery(%q, %q, %d)", domain, id, version)
	return s.finish(ctx, worker, domain, id, version, "", pendingOr(""),
		`UPDATE report_versions SET last_error = ?, next_attempt_at = ?`, lastError, s.tm(sqlutil.Time(next)))
}

// FailDelivery marks a version permanently failed. See store.Deliveries.
func (s *Store) FailDelivery(ctx context.Context, worker, domain, id string, version int, lastError string) (err error) {
	defer s.wrap(&err, "FailDelivery(%q, %q, %d)", domain, id, version)
	return s.finish(ctx, worker, domain, id, version, store.EventFailed, pendingOr(store.DeliveryFailed),
		`UPDATE report_versions SET state = 'failed', last_error = ?`, lastError)
}

// DeliveryStats returns per-domain delivery figures. See store.Deliveries.
func (s *Store) DeliveryStats(ctx context.Context) (_ []store.DeliveryStats, err error) {
	defer s.wrap(&err, "DeliveryStats")
	rows, err := s.reader().query(ctx, `SELECT domain,
		sum(CASE WHEN state = 'pending' THEN 1 ELSE 0 END),
		min(CASE WHEN state = 'pending' THEN created_at END),
		sum(CASE WHEN state = 'failed' THEN 1 ELSE 0 END)
		FROM report_versions WHERE state IN ('pending', 'failed') GROUP BY domain ORDER BY domain`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.DeliveryStats
	for rows.Next() {
		var d store.DeliveryStats
		if err := rows.Scan(&d.Domain, &d.Pending, atPtr{&d.OldestPending}, &d.Failed); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// PendingDeliveries counts pending versions. See store.Deliveries.
func (s *Store) PendingDeliveries(ctx context.Context) (n int, err error) {
	defer s.wrap(&err, "PendingDeliveries")
	err = s.reader().queryRow(ctx, `SELECT count(*) FROM report_versions WHERE state = 'pending'`).Scan(&n)
	return n, err
}
