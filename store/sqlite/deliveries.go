package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// ClaimDelivery leases the next due job. Every write transaction holds
// SQLite's single write lock, so the choice of the report and its lease are
// atomic with respect to every other claim, update and completion, in this
// process and in any other on the same file. See store.Deliveries.
func (s *Store) ClaimDelivery(ctx context.Context, worker string, lease time.Duration, now time.Time) (_ *store.Report, err error) {
	defer store.Wrap(&err, "sqlite.ClaimDelivery(%q)", worker)
	if err := sqlutil.CheckClaim(worker, lease); err != nil {
		return nil, err
	}
	now = sqlutil.Time(now)
	until := sqlutil.Time(now.Add(lease))
	var claimed *store.Report
	err = s.write(ctx, func(tx *sql.Tx) error {
		// A report row whose queue_due_at points at nothing pending would be
		// a bug; rather than wedge the queue on it, repair it and look on.
		for range 3 {
			var domain, id string
			err := tx.QueryRowContext(ctx, `SELECT domain, id FROM reports
				WHERE queue_due_at <= ? AND (lease_until IS NULL OR lease_until <= ?)
				ORDER BY queue_due_at, created_at, domain, id LIMIT 1`, us(now), us(now)).Scan(&domain, &id)
			if err != nil {
				return notFound(err, "due delivery")
			}
			var version sql.NullInt64
			if err := tx.QueryRowContext(ctx, `SELECT max(version) FROM report_versions
				WHERE domain = ? AND report_id = ? AND state = 'pending'`, domain, id).Scan(&version); err != nil {
				return err
			}
			if !version.Valid {
				if _, err := tx.ExecContext(ctx, `UPDATE reports SET queue_due_at = NULL WHERE domain = ? AND id = ?`,
					domain, id); err != nil {
					return err
				}
				continue
			}
			v := int(version.Int64)
			// QUBS keeps only the latest submission: older pending
			// versions would be overwritten at once, or, arriving late,
			// overwrite the newer one. They are never sent.
			if _, err := tx.ExecContext(ctx, `UPDATE report_versions SET state = 'superseded', last_error = ?
				WHERE domain = ? AND report_id = ? AND state = 'pending' AND version < ?`,
				fmt.Sprintf("superseded by version %d", v), domain, id, v); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE report_versions SET attempts = attempts + 1
				WHERE domain = ? AND report_id = ? AND version = ?`, domain, id, v); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE reports SET leased_version = ?, lease_owner = ?, lease_until = ?
				WHERE domain = ? AND id = ?`, v, worker, us(until), domain, id); err != nil {
				return err
			}
			claimed, err = loadVersion(ctx, tx, domain, id, v, true)
			return err
		}
		return store.E(store.KindNotFound, "no due delivery")
	})
	return claimed, err
}

// versionState returns the delivery state of a version.
func versionState(ctx context.Context, q querier, domain, id string, version int) (string, error) {
	var state string
	err := q.QueryRowContext(ctx, `SELECT state FROM report_versions WHERE domain = ? AND report_id = ? AND version = ?`,
		domain, id, version).Scan(&state)
	return state, notFound(err, "report version")
}

// release drops the report's lease if version holds it and points the
// queue at the newest pending version (NULL when none is left).
func release(ctx context.Context, tx *sql.Tx, domain, id string, version int) error {
	// SET expressions all see the row as it was, so the CASEs test the old
	// leased_version.
	_, err := tx.ExecContext(ctx, `UPDATE reports SET
		queue_due_at = (SELECT next_attempt_at FROM report_versions
			WHERE domain = reports.domain AND report_id = reports.id AND state = 'pending'
			ORDER BY version DESC LIMIT 1),
		lease_owner = CASE WHEN leased_version = ? THEN NULL ELSE lease_owner END,
		lease_until = CASE WHEN leased_version = ? THEN NULL ELSE lease_until END,
		leased_version = CASE WHEN leased_version = ? THEN NULL ELSE leased_version END
		WHERE domain = ? AND id = ?`, version, version, version, domain, id)
	return err
}

// RecordUpload records an artifact's successful upload. See store.Deliveries.
func (s *Store) RecordUpload(ctx context.Context, domain, id string, version, index int, qubsGUID string, at time.Time) (err error) {
	defer store.Wrap(&err, "sqlite.RecordUpload(%q, %q, %d, %d)", domain, id, version, index)
	return s.write(ctx, func(tx *sql.Tx) error {
		state, err := versionState(ctx, tx, domain, id, version)
		if err != nil {
			return err
		}
		if state != store.DeliveryPending {
			return store.E(store.KindConflict, "version is %s", state)
		}
		res, err := tx.ExecContext(ctx, `UPDATE report_artifacts SET qubs_guid = ?, uploaded_at = ?
			WHERE domain = ? AND report_id = ? AND version = ? AND idx = ?`,
			qubsGUID, us(sqlutil.Time(at)), domain, id, version, index)
		if err != nil {
			return err
		}
		if ok, err := oneRow(res); err != nil {
			return err
		} else if !ok {
			return store.E(store.KindNotFound, "no such artifact")
		}
		return nil
	})
}

// CompleteDelivery marks a version delivered. See store.Deliveries.
func (s *Store) CompleteDelivery(ctx context.Context, domain, id string, version int, reportGUID string, at time.Time) (err error) {
	defer store.Wrap(&err, "sqlite.CompleteDelivery(%q, %q, %d)", domain, id, version)
	return s.write(ctx, func(tx *sql.Tx) error {
		state, err := versionState(ctx, tx, domain, id, version)
		switch {
		case err != nil:
			return err
		case state == store.DeliveryDelivered:
			return nil
		case state != store.DeliveryPending:
			return store.E(store.KindConflict, "version is %s", state)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE report_versions SET state = 'delivered', report_guid = ?, delivered_at = ?
			WHERE domain = ? AND report_id = ? AND version = ?`,
			reportGUID, us(sqlutil.Time(at)), domain, id, version); err != nil {
			return err
		}
		return release(ctx, tx, domain, id, version)
	})
}

// RetryDelivery makes a version due again later. See store.Deliveries.
func (s *Store) RetryDelivery(ctx context.Context, domain, id string, version int, lastError string, next time.Time) (err error) {
	defer store.Wrap(&err, "sqlite.RetryDelivery(%q, %q, %d)", domain, id, version)
	return s.write(ctx, func(tx *sql.Tx) error {
		state, err := versionState(ctx, tx, domain, id, version)
		switch {
		case err != nil:
			return err
		case state != store.DeliveryPending:
			return store.E(store.KindConflict, "version is %s", state)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE report_versions SET last_error = ?, next_attempt_at = ?
			WHERE domain = ? AND report_id = ? AND version = ?`,
			lastError, us(sqlutil.Time(next)), domain, id, version); err != nil {
			return err
		}
		return release(ctx, tx, domain, id, version)
	})
}

// FailDelivery marks a version permanently failed. See store.Deliveries.
func (s *Store) FailDelivery(ctx context.Context, domain, id string, version int, lastError string) (err error) {
	defer store.Wrap(&err, "sqlite.FailDelivery(%q, %q, %d)", domain, id, version)
	return s.write(ctx, func(tx *sql.Tx) error {
		state, err := versionState(ctx, tx, domain, id, version)
		switch {
		case err != nil:
			return err
		case state == store.DeliveryFailed:
			return nil
		case state != store.DeliveryPending:
			return store.E(store.KindConflict, "version is %s", state)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE report_versions SET state = 'failed', last_error = ?
			WHERE domain = ? AND report_id = ? AND version = ?`,
			lastError, domain, id, version); err != nil {
			return err
		}
		return release(ctx, tx, domain, id, version)
	})
}

// PendingDeliveries counts pending versions. See store.Deliveries.
func (s *Store) PendingDeliveries(ctx context.Context) (n int, err error) {
	defer store.Wrap(&err, "sqlite.PendingDeliveries")
	err = s.r.QueryRowContext(ctx, `SELECT count(*) FROM report_versions WHERE state = 'pending'`).Scan(&n)
	return n, err
}
