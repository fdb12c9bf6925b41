package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// ClaimDelivery leases the next due job. See store.Deliveries.
//
// The first statement locks the first due report row that no other
// transaction holds (SKIP LOCKED: concurrent claimers take different reports
// instead of queueing). PostgreSQL re-checks the WHERE clause on the newest
// version of a row it locks, so a report another replica leased and
// committed a moment ago is not taken again. The statements after it run
// with the lock held and, at READ COMMITTED, see everything committed
// before it: which versions are pending is read fresh, not from the first
// statement's snapshot.
func (s *Store) ClaimDelivery(ctx context.Context, worker string, lease time.Duration, now time.Time) (_ *store.Report, err error) {
	defer store.Wrap(&err, "postgres.ClaimDelivery(%q)", worker)
	if err := sqlutil.CheckClaim(worker, lease); err != nil {
		return nil, err
	}
	now = sqlutil.Time(now)
	until := sqlutil.Time(now.Add(lease))
	var claimed *store.Report
	err = s.write(ctx, func(tx pgx.Tx) error {
		// A report row whose queue_due_at points at nothing pending would be
		// a bug; rather than wedge the queue on it, repair it and look on.
		for range 3 {
			var domain, id string
			err := tx.QueryRow(ctx, `SELECT domain, id FROM reports
				WHERE queue_due_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)
				ORDER BY queue_due_at, created_at, domain, id LIMIT 1
				FOR UPDATE SKIP LOCKED`, now).Scan(&domain, &id)
			if err != nil {
				return notFound(err, "due delivery")
			}
			var version *int
			if err := tx.QueryRow(ctx, `SELECT max(version) FROM report_versions
				WHERE domain = $1 AND report_id = $2 AND state = 'pending'`, domain, id).Scan(&version); err != nil {
				return err
			}
			if version == nil {
				if _, err := tx.Exec(ctx, `UPDATE reports SET queue_due_at = NULL WHERE domain = $1 AND id = $2`,
					domain, id); err != nil {
					return err
				}
				continue
			}
			v := *version
			// QUBS keeps only the latest submission: older pending
			// versions would be overwritten at once, or, arriving late,
			// overwrite the newer one. They are never sent.
			if _, err := tx.Exec(ctx, `UPDATE report_versions SET state = 'superseded', last_error = $1
				WHERE domain = $2 AND report_id = $3 AND state = 'pending' AND version < $4`,
				fmt.Sprintf("superseded by version %d", v), domain, id, v); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE report_versions SET attempts = attempts + 1
				WHERE domain = $1 AND report_id = $2 AND version = $3`, domain, id, v); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE reports SET leased_version = $1, lease_owner = $2, lease_until = $3
				WHERE domain = $4 AND id = $5`, v, worker, until, domain, id); err != nil {
				return err
			}
			claimed, err = loadVersion(ctx, tx, domain, id, v, true)
			return err
		}
		return store.E(store.KindNotFound, "no due delivery")
	})
	return claimed, err
}

// lockReport locks a report's row for the rest of the transaction, the
// first step of every change to its queue.
func lockReport(ctx context.Context, tx pgx.Tx, domain, id string) error {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM reports WHERE domain = $1 AND id = $2 FOR UPDATE`, domain, id).Scan(&one)
	return notFound(err, "report")
}

// versionState returns the delivery state of a version, locking its row.
func versionState(ctx context.Context, tx pgx.Tx, domain, id string, version int) (string, error) {
	var state string
	err := tx.QueryRow(ctx, `SELECT state FROM report_versions WHERE domain = $1 AND report_id = $2 AND version = $3 FOR UPDATE`,
		domain, id, version).Scan(&state)
	return state, notFound(err, "report version")
}

// release drops the report's lease if version holds it and points the
// queue at the newest pending version (NULL when none is left).
func release(ctx context.Context, tx pgx.Tx, domain, id string, version int) error {
	// SET expressions all see the row as it was, so the CASEs test the old
	// leased_version.
	_, err := tx.Exec(ctx, `UPDATE reports SET
		queue_due_at = (SELECT next_attempt_at FROM report_versions
			WHERE domain = reports.domain AND report_id = reports.id AND state = 'pending'
			ORDER BY version DESC LIMIT 1),
		lease_owner = CASE WHEN leased_version = $1 THEN NULL ELSE lease_owner END,
		lease_until = CASE WHEN leased_version = $1 THEN NULL ELSE lease_until END,
		leased_version = CASE WHEN leased_version = $1 THEN NULL ELSE leased_version END
		WHERE domain = $2 AND id = $3`, version, domain, id)
	return err
}

// RecordUpload records an artifact's successful upload. It locks only the
// version row: it does not change the queue. See store.Deliveries.
func (s *Store) RecordUpload(ctx context.Context, domain, id string, version, index int, qubsGUID string, at time.Time) (err error) {
	defer store.Wrap(&err, "postgres.RecordUpload(%q, %q, %d, %d)", domain, id, version, index)
	return s.write(ctx, func(tx pgx.Tx) error {
		state, err := versionState(ctx, tx, domain, id, version)
		if err != nil {
			return err
		}
		if state != store.DeliveryPending {
			return store.E(store.KindConflict, "version is %s", state)
		}
		tag, err := tx.Exec(ctx, `UPDATE report_artifacts SET qubs_guid = $1, uploaded_at = $2
			WHERE domain = $3 AND report_id = $4 AND version = $5 AND idx = $6`,
			qubsGUID, sqlutil.Time(at), domain, id, version, index)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return store.E(store.KindNotFound, "no such artifact")
		}
		return nil
	})
}

// finish runs the common part of Complete, Retry and Fail: lock the report,
// read the version's state, let decide say whether to go on (and how), then
// release the lease.
func (s *Store) finish(ctx context.Context, domain, id string, version int,
	decide func(state string) (noop bool, err error), update string, args ...any) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		if err := lockReport(ctx, tx, domain, id); err != nil {
			return err
		}
		state, err := versionState(ctx, tx, domain, id, version)
		if err != nil {
			return err
		}
		if noop, err := decide(state); noop || err != nil {
			return err
		}
		n := len(args)
		if _, err := tx.Exec(ctx, update+fmt.Sprintf(" WHERE domain = $%d AND report_id = $%d AND version = $%d", n+1, n+2, n+3),
			append(args, domain, id, version)...); err != nil {
			return err
		}
		return release(ctx, tx, domain, id, version)
	})
}

// CompleteDelivery marks a version delivered. See store.Deliveries.
func (s *Store) CompleteDelivery(ctx context.Context, domain, id string, version int, reportGUID string, at time.Time) (err error) {
	defer store.Wrap(&err, "postgres.CompleteDelivery(%q, %q, %d)", domain, id, version)
	return s.finish(ctx, domain, id, version, func(state string) (bool, error) {
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
func (s *Store) RetryDelivery(ctx context.Context, domain, id string, version int, lastError string, next time.Time) (err error) {
	defer store.Wrap(&err, "postgres.RetryDelivery(%q, %q, %d)", domain, id, version)
	return s.finish(ctx, domain, id, version, func(state string) (bool, error) {
		if state == store.DeliveryPending {
			return false, nil
		}
		return false, store.E(store.KindConflict, "version is %s", state)
	}, `UPDATE report_versions SET last_error = $1, next_attempt_at = $2`, lastError, sqlutil.Time(next))
}

// FailDelivery marks a version permanently failed. See store.Deliveries.
func (s *Store) FailDelivery(ctx context.Context, domain, id string, version int, lastError string) (err error) {
	defer store.Wrap(&err, "postgres.FailDelivery(%q, %q, %d)", domain, id, version)
	return s.finish(ctx, domain, id, version, func(state string) (bool, error) {
		switch state {
		case store.DeliveryPending:
			return false, nil
		case store.DeliveryFailed:
			return true, nil
		}
		return false, store.E(store.KindConflict, "version is %s", state)
	}, `UPDATE report_versions SET state = 'failed', last_error = $1`, lastError)
}

// PendingDeliveries counts pending versions. See store.Deliveries.
func (s *Store) PendingDeliveries(ctx context.Context) (n int, err error) {
	defer store.Wrap(&err, "postgres.PendingDeliveries")
	err = s.pool.QueryRow(ctx, `SELECT count(*) FROM report_versions WHERE state = 'pending'`).Scan(&n)
	return n, err
}
