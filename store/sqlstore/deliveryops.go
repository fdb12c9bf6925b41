package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// ListDeliveries lists versions' delivery states. See store.DeliveryOps.
func (s *Store) ListDeliveries(ctx context.Context, f store.DeliveryFilter) (_ []store.DeliveryInfo, err error) {
	defer s.wrap(&err, "ListDeliveries(%q)", f.Domain)
	limit, err := sqlutil.CheckDeliveryFilter(f)
	if err != nil {
		return nil, err
	}
	var (
		where []string
		args  []any
	)
	if f.Domain != "" {
		where, args = append(where, "domain = ?"), append(args, f.Domain)
	}
	if len(f.States) > 0 {
		where = append(where, "state IN ("+placeholders(len(f.States))+")")
		for _, st := range f.States {
			args = append(args, st)
		}
	}
	query := `SELECT domain, report_id, version, appointment_id, created_at, purged, state, attempts, last_error,
		report_guid, delivered_at, next_attempt_at FROM report_versions`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY created_at DESC, domain, report_id, version DESC LIMIT ?"
	rows, err := s.reader().query(ctx, query, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.DeliveryInfo
	for rows.Next() {
		var d store.DeliveryInfo
		if err := rows.Scan(&d.Domain, &d.ReportID, &d.Version, &d.AppointmentID, at{&d.CreatedAt}, &d.Purged, &d.Delivery.State,
			&d.Delivery.Attempts, &d.Delivery.LastError, &d.Delivery.ReportGUID, atPtr{&d.Delivery.DeliveredAt},
			at{&d.Delivery.NextAttemptAt}); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// lockOpsVersion locks the version's appointment queue (the first lock, as
// for every change to a job: see lockJob) and reads what RequeueDelivery
// and AbandonDelivery decide on under it.
func (s *Store) lockOpsVersion(ctx context.Context, tx *tx, domain, id string, version int) (v sqlutil.OpsVersion, appt string, err error) {
	// A version's appointment never changes, so reading it before the
	// lock is safe.
	err = tx.queryRow(ctx, `SELECT appointment_id FROM report_versions WHERE domain = ? AND report_id = ? AND version = ?`,
		domain, id, version).Scan(&appt)
	if err != nil {
		return v, "", notFound(err, "report version")
	}
	var (
		report, owner sql.NullString
		leased        sql.NullInt64
	)
	err = tx.queryRow(ctx, `SELECT leased_report, leased_version, lease_owner, lease_until FROM delivery_queues
		WHERE domain = ? AND appointment_id = ?`+s.d.forUpdate(), domain, appt).Scan(&report, &leased, &owner, atPtr{&v.LeaseUntil})
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return v, "", err
	}
	if report.Valid && leased.Valid && owner.Valid {
		v.Holder = sqlutil.Holder{Report: report.String, Version: int(leased.Int64), Owner: owner.String}
	}
	var seq int64
	// Locked too: the retention purge does not take the queue's lock, and
	// a version it purges between this read and the requeue must not be
	// queued without its submission (PostgreSQL; SQLite's writes are
	// serial anyway).
	err = tx.queryRow(ctx, `SELECT state, last_error, purged, queue_seq FROM report_versions
		WHERE domain = ? AND report_id = ? AND version = ?`+s.d.forUpdate(), domain, id, version).Scan(&v.State, &v.LastError, &v.Purged, &seq)
	if err != nil {
		return v, "", notFound(err, "report version")
	}
	var (
		nid string
		nv  int
	)
	err = tx.queryRow(ctx, `SELECT report_id, version FROM report_versions
		WHERE domain = ? AND appointment_id = ? AND queue_seq > ? ORDER BY queue_seq DESC LIMIT 1`, domain, appt, seq).Scan(&nid, &nv)
	switch {
	case err == nil:
		v.Newer = sqlutil.NewerVersion(nid, nv)
	case !errors.Is(err, sql.ErrNoRows):
		return v, "", err
	}
	return v, appt, nil
}

// RequeueDelivery sends a failed version again. See store.DeliveryOps.
func (s *Store) RequeueDelivery(ctx context.Context, domain, id string, version int, now time.Time) (err error) {
	defer s.wrap(&err, "RequeueDelivery(%q, %q, %d)", domain, id, version)
	now = sqlutil.Time(now)
	return s.write(ctx, func(tx *tx) error {
		v, appt, err := s.lockOpsVersion(ctx, tx, domain, id, version)
		if err != nil {
			return err
		}
		if err := sqlutil.CheckRequeue(v); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `UPDATE report_versions SET state = 'pending', next_attempt_at = ?
			WHERE domain = ? AND report_id = ? AND version = ?`, s.tm(now), domain, id, version); err != nil {
			return err
		}
		// No newer version exists, so this one is the newest pending of
		// its appointment: the queue is due when it is.
		_, err = tx.exec(ctx, `UPDATE delivery_queues SET due_at = ? WHERE domain = ? AND appointment_id = ?`,
			s.tm(now), domain, appt)
		return err
	})
}

// AbandonDelivery gives a version up. See store.DeliveryOps.
func (s *Store) AbandonDelivery(ctx context.Context, domain, id string, version int, now time.Time) (err error) {
	defer s.wrap(&err, "AbandonDelivery(%q, %q, %d)", domain, id, version)
	return s.write(ctx, func(tx *tx) error {
		v, appt, err := s.lockOpsVersion(ctx, tx, domain, id, version)
		if err != nil {
			return err
		}
		if noop, err := sqlutil.CheckAbandon(v, id, version, now); noop || err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `UPDATE report_versions SET state = 'failed', last_error = ?
			WHERE domain = ? AND report_id = ? AND version = ?`, sqlutil.AbandonedError(v.LastError), domain, id, version); err != nil {
			return err
		}
		// A pending version given up ends its delivery now; a failed one
		// was told of when it failed.
		if v.State == store.DeliveryPending {
			if err := s.appendEvents(ctx, tx, deliveryEvent(domain, id, appt, store.EventFailed)); err != nil {
				return err
			}
		}
		// The queue points at the newest version still pending; an
		// expired lease on the abandoned version goes with it.
		_, err = tx.exec(ctx, `UPDATE delivery_queues SET
			due_at = (SELECT next_attempt_at FROM report_versions
				WHERE domain = delivery_queues.domain AND appointment_id = delivery_queues.appointment_id AND state = 'pending'
				ORDER BY queue_seq DESC LIMIT 1),
			leased_report = CASE WHEN leased_report = ? AND leased_version = ? THEN NULL ELSE leased_report END,
			leased_version = CASE WHEN leased_report = ? AND leased_version = ? THEN NULL ELSE leased_version END,
			lease_owner = CASE WHEN leased_report = ? AND leased_version = ? THEN NULL ELSE lease_owner END,
			lease_until = CASE WHEN leased_report = ? AND leased_version = ? THEN NULL ELSE lease_until END
			WHERE domain = ? AND appointment_id = ?`, id, version, id, version, id, version, id, version, domain, appt)
		return err
	})
}
