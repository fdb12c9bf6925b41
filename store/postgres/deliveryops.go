package postgres

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// ListDeliveries lists versions' delivery states. See store.DeliveryOps.
func (s *Store) ListDeliveries(ctx context.Context, f store.DeliveryFilter) (_ []store.DeliveryInfo, err error) {
	defer store.Wrap(&err, "postgres.ListDeliveries(%q)", f.Domain)
	limit, err := sqlutil.CheckDeliveryFilter(f)
	if err != nil {
		return nil, err
	}
	var (
		where []string
		args  []any
	)
	if f.Domain != "" {
		args = append(args, f.Domain)
		where = append(where, "domain = $"+strconv.Itoa(len(args)))
	}
	if len(f.States) > 0 {
		args = append(args, f.States)
		where = append(where, "state = ANY($"+strconv.Itoa(len(args))+")")
	}
	q := `SELECT domain, report_id, version, appointment_id, created_at, purged, state, attempts, last_error,
		report_guid, delivered_at, next_attempt_at FROM report_versions`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, limit)
	q += " ORDER BY created_at DESC, domain, report_id, version DESC LIMIT $" + strconv.Itoa(len(args))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.DeliveryInfo
	for rows.Next() {
		var d store.DeliveryInfo
		if err := rows.Scan(&d.Domain, &d.ReportID, &d.Version, &d.AppointmentID, &d.CreatedAt, &d.Purged, &d.Delivery.State,
			&d.Delivery.Attempts, &d.Delivery.LastError, &d.Delivery.ReportGUID, &d.Delivery.DeliveredAt, &d.Delivery.NextAttemptAt); err != nil {
			return nil, err
		}
		d.CreatedAt, d.Delivery.NextAttemptAt, d.Delivery.DeliveredAt = utc(d.CreatedAt), utc(d.Delivery.NextAttemptAt), utcPtr(d.Delivery.DeliveredAt)
		out = append(out, d)
	}
	return out, rows.Err()
}

// lockOpsVersion locks the version's appointment queue (the first lock, as
// for every change to a job) and reads what RequeueDelivery and
// AbandonDelivery decide on under it.
func lockOpsVersion(ctx context.Context, tx pgx.Tx, domain, id string, version int) (v sqlutil.OpsVersion, appt string, err error) {
	// A version's appointment never changes, so reading it before the
	// lock is safe.
	err = tx.QueryRow(ctx, `SELECT appointment_id FROM report_versions WHERE domain = $1 AND report_id = $2 AND version = $3`,
		domain, id, version).Scan(&appt)
	if err != nil {
		return v, "", notFound(err, "report version")
	}
	var (
		report, owner *string
		leased        *int
	)
	err = tx.QueryRow(ctx, `SELECT leased_report, leased_version, lease_owner, lease_until FROM delivery_queues
		WHERE domain = $1 AND appointment_id = $2 FOR UPDATE`, domain, appt).Scan(&report, &leased, &owner, &v.LeaseUntil)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return v, "", err
	}
	if report != nil && leased != nil && owner != nil {
		v.Holder = sqlutil.Holder{Report: *report, Version: *leased, Owner: *owner}
	}
	var seq int64
	err = tx.QueryRow(ctx, `SELECT state, last_error, purged, queue_seq FROM report_versions
		WHERE domain = $1 AND report_id = $2 AND version = $3`, domain, id, version).Scan(&v.State, &v.LastError, &v.Purged, &seq)
	if err != nil {
		return v, "", notFound(err, "report version")
	}
	var (
		nid string
		nv  int
	)
	err = tx.QueryRow(ctx, `SELECT report_id, version FROM report_versions
		WHERE domain = $1 AND appointment_id = $2 AND queue_seq > $3 ORDER BY queue_seq DESC LIMIT 1`, domain, appt, seq).Scan(&nid, &nv)
	switch {
	case err == nil:
		v.Newer = sqlutil.NewerVersion(nid, nv)
	case !errors.Is(err, pgx.ErrNoRows):
		return v, "", err
	}
	return v, appt, nil
}

// RequeueDelivery sends a failed version again. See store.DeliveryOps.
func (s *Store) RequeueDelivery(ctx context.Context, domain, id string, version int, now time.Time) (err error) {
	defer store.Wrap(&err, "postgres.RequeueDelivery(%q, %q, %d)", domain, id, version)
	now = sqlutil.Time(now)
	return s.write(ctx, func(tx pgx.Tx) error {
		v, appt, err := lockOpsVersion(ctx, tx, domain, id, version)
		if err != nil {
			return err
		}
		if err := sqlutil.CheckRequeue(v); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE report_versions SET state = 'pending', next_attempt_at = $4
			WHERE domain = $1 AND report_id = $2 AND version = $3`, domain, id, version, now); err != nil {
			return err
		}
		// No newer version exists, so this one is the newest pending of
		// its appointment: the queue is due when it is.
		_, err = tx.Exec(ctx, `UPDATE delivery_queues SET due_at = $3 WHERE domain = $1 AND appointment_id = $2`, domain, appt, now)
		return err
	})
}

// AbandonDelivery gives a version up. See store.DeliveryOps.
func (s *Store) AbandonDelivery(ctx context.Context, domain, id string, version int, now time.Time) (err error) {
	defer store.Wrap(&err, "postgres.AbandonDelivery(%q, %q, %d)", domain, id, version)
	return s.write(ctx, func(tx pgx.Tx) error {
		v, appt, err := lockOpsVersion(ctx, tx, domain, id, version)
		if err != nil {
			return err
		}
		if noop, err := sqlutil.CheckAbandon(v, id, version, now); noop || err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE report_versions SET state = 'failed', last_error = $4
			WHERE domain = $1 AND report_id = $2 AND version = $3`, domain, id, version, sqlutil.AbandonedError(v.LastError)); err != nil {
			return err
		}
		// The queue points at the newest version still pending; an
		// expired lease on the abandoned version goes with it.
		_, err = tx.Exec(ctx, `UPDATE delivery_queues SET
			due_at = (SELECT next_attempt_at FROM report_versions
				WHERE domain = delivery_queues.domain AND appointment_id = delivery_queues.appointment_id AND state = 'pending'
				ORDER BY queue_seq DESC LIMIT 1),
			leased_report = CASE WHEN leased_report = $3 AND leased_version = $4 THEN NULL ELSE leased_report END,
			leased_version = CASE WHEN leased_report = $3 AND leased_version = $4 THEN NULL ELSE leased_version END,
			lease_owner = CASE WHEN leased_report = $3 AND leased_version = $4 THEN NULL ELSE lease_owner END,
			lease_until = CASE WHEN leased_report = $3 AND leased_version = $4 THEN NULL ELSE lease_until END
			WHERE domain = $1 AND appointment_id = $2`, domain, appt, id, version)
		return err
	})
}
