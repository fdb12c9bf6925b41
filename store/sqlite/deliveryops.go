package sqlite

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
	defer store.Wrap(&err, "sqlite.ListDeliveries(%q)", f.Domain)
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
	q := `SELECT domain, report_id, version, appointment_id, created_at, purged, state, attempts, last_error,
		report_guid, delivered_at, next_attempt_at FROM report_versions`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, domain, report_id, version DESC LIMIT ?"
	rows, err := s.r.QueryContext(ctx, q, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.DeliveryInfo
	for rows.Next() {
		var (
			d             store.DeliveryInfo
			created, next int64
			delivered     sql.NullInt64
		)
		if err := rows.Scan(&d.Domain, &d.ReportID, &d.Version, &d.AppointmentID, &created, &d.Purged, &d.Delivery.State,
			&d.Delivery.Attempts, &d.Delivery.LastError, &d.Delivery.ReportGUID, &delivered, &next); err != nil {
			return nil, err
		}
		d.CreatedAt, d.Delivery.NextAttemptAt, d.Delivery.DeliveredAt = fromUS(created), fromUS(next), fromNullUS(delivered)
		out = append(out, d)
	}
	return out, rows.Err()
}

// opsVersion reads what RequeueDelivery and AbandonDelivery decide on,
// inside a write transaction (which holds SQLite's one write lock).
func opsVersion(ctx context.Context, tx *sql.Tx, domain, id string, version int) (v sqlutil.OpsVersion, appt string, err error) {
	var (
		seq           int64
		report, owner sql.NullString
		leased, until sql.NullInt64
	)
	err = tx.QueryRowContext(ctx, `SELECT v.state, v.last_error, v.purged, v.appointment_id, v.queue_seq,
		q.leased_report, q.leased_version, q.lease_owner, q.lease_until
		FROM report_versions v LEFT JOIN delivery_queues q ON q.domain = v.domain AND q.appointment_id = v.appointment_id
		WHERE v.domain = ? AND v.report_id = ? AND v.version = ?`, domain, id, version).
		Scan(&v.State, &v.LastError, &v.Purged, &appt, &seq, &report, &leased, &owner, &until)
	if err != nil {
		return v, "", notFound(err, "report version")
	}
	v.Holder = sqlutil.Holder{Report: report.String, Version: int(leased.Int64), Owner: owner.String}
	v.LeaseUntil = fromNullUS(until)
	var (
		nid string
		nv  int
	)
	err = tx.QueryRowContext(ctx, `SELECT report_id, version FROM report_versions
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
	defer store.Wrap(&err, "sqlite.RequeueDelivery(%q, %q, %d)", domain, id, version)
	now = sqlutil.Time(now)
	return s.write(ctx, func(tx *sql.Tx) error {
		v, appt, err := opsVersion(ctx, tx, domain, id, version)
		if err != nil {
			return err
		}
		if err := sqlutil.CheckRequeue(v); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE report_versions SET state = 'pending', next_attempt_at = ?
			WHERE domain = ? AND report_id = ? AND version = ?`, us(now), domain, id, version); err != nil {
			return err
		}
		// No newer version exists, so this one is the newest pending of
		// its appointment: the queue is due when it is.
		_, err = tx.ExecContext(ctx, `UPDATE delivery_queues SET due_at = ? WHERE domain = ? AND appointment_id = ?`,
			us(now), domain, appt)
		return err
	})
}

// AbandonDelivery gives a version up. See store.DeliveryOps.
func (s *Store) AbandonDelivery(ctx context.Context, domain, id string, version int, now time.Time) (err error) {
	defer store.Wrap(&err, "sqlite.AbandonDelivery(%q, %q, %d)", domain, id, version)
	return s.write(ctx, func(tx *sql.Tx) error {
		v, appt, err := opsVersion(ctx, tx, domain, id, version)
		if err != nil {
			return err
		}
		if noop, err := sqlutil.CheckAbandon(v, id, version, now); noop || err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE report_versions SET state = 'failed', last_error = ?
			WHERE domain = ? AND report_id = ? AND version = ?`, sqlutil.AbandonedError(v.LastError), domain, id, version); err != nil {
			return err
		}
		// The queue points at the newest version still pending; an
		// expired lease on the abandoned version goes with it.
		_, err = tx.ExecContext(ctx, `UPDATE delivery_queues SET
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
