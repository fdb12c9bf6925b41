package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// liveStatuses are the statuses whose subscriptions get notifications:
// error ones too, so that a receiver that comes back misses nothing.
const liveStatuses = `('requested', 'active', 'error')`

const subscriptionColumns = `domain, id, status, topic, criteria, endpoint, content, headers,
	heartbeat_ms, timeout_ms, max_count, resource, start_seq, events_since_start, delivered_through,
	error, attempts, failing_since, retry_at, heartbeat_at, last_sent_at, created_at, lease_owner, lease_until`

type rowScanner interface{ Scan(dest ...any) error }

func scanSubscription(r rowScanner) (*store.Subscription, error) {
	var (
		sub                  store.Subscription
		criteria, headers    string
		heartbeat, timeout   int64
		owner                sql.NullString
		failing, retry, hb   *time.Time
		lastSent, leaseUntil *time.Time
	)
	err := r.Scan(&sub.Domain, &sub.ID, &sub.Status, &sub.Topic, &criteria, &sub.Endpoint, &sub.Content, &headers,
		&heartbeat, &timeout, &sub.MaxCount, &sub.Resource, &sub.StartSeq, &sub.EventsSinceStart, &sub.DeliveredThrough,
		&sub.Error, &sub.Attempts, atPtr{&failing}, atPtr{&retry}, atPtr{&hb}, atPtr{&lastSent}, at{&sub.CreatedAt},
		&owner, atPtr{&leaseUntil})
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(criteria), &sub.Criteria); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(headers), &sub.Headers); err != nil {
		return nil, err
	}
	sub.HeartbeatPeriod, sub.Timeout = time.Duration(heartbeat)*time.Millisecond, time.Duration(timeout)*time.Millisecond
	sub.FailingSince, sub.RetryAt, sub.HeartbeatAt, sub.LastSentAt = failing, retry, hb, lastSent
	sub.LeasedBy, sub.LeaseUntil = owner.String, leaseUntil
	return &sub, nil
}

// jsonList encodes a string list for a TEXT column, [] for none.
func jsonList(l []string) string {
	if l == nil {
		l = []string{}
	}
	b, _ := json.Marshal(l) // strings always marshal
	return string(b)
}

// CreateSubscription stores a new subscription, requested and due now.
func (s *Store) CreateSubscription(ctx context.Context, sub *store.Subscription) (err error) {
	defer s.wrap(&err, "CreateSubscription(%q, %q)", sub.Domain, sub.ID)
	if sub.Domain == "" || sub.ID == "" || sub.Topic == "" || sub.Endpoint == "" || sub.Content == "" || len(sub.Resource) == 0 {
		return store.E(store.KindInvalid, "a subscription needs a domain, id, topic, endpoint, content and resource")
	}
	sub.Status = store.SubscriptionRequested
	if sub.CreatedAt.IsZero() {
		sub.CreatedAt = time.Now()
	}
	sub.CreatedAt = sqlutil.Time(sub.CreatedAt)
	return s.write(ctx, func(t *tx) error {
		// Events committed before this one are not the subscriber's: it
		// starts with the log as it stands.
		if err := t.queryRow(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(&sub.StartSeq); err != nil {
			return err
		}
		res, err := t.exec(ctx, `INSERT INTO subscriptions (domain, id, status, topic, criteria, endpoint, content, headers,
			heartbeat_ms, timeout_ms, max_count, resource, start_seq, claimed_at, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			sub.Domain, sub.ID, sub.Status, sub.Topic, jsonList(sub.Criteria), sub.Endpoint, sub.Content, jsonList(sub.Headers),
			sub.HeartbeatPeriod.Milliseconds(), sub.Timeout.Milliseconds(), sub.MaxCount, sub.Resource, sub.StartSeq,
			s.tm(sub.CreatedAt), s.tm(sub.CreatedAt))
		return changedOne(res, err, store.KindConflict, "subscription exists")
	})
}

// Subscription reads one subscription.
func (s *Store) Subscription(ctx context.Context, domain, id string) (_ *store.Subscription, err error) {
	defer s.wrap(&err, "Subscription(%q, %q)", domain, id)
	var sub *store.Subscription
	err = s.read(ctx, func(r q) error {
		var err error
		if sub, err = scanSubscription(r.queryRow(ctx, `SELECT `+subscriptionColumns+` FROM subscriptions
			WHERE domain = ? AND id = ?`, domain, id)); err != nil {
			return notFound(err, "subscription")
		}
		// Retention prunes a prefix of the outbox: the first number held
		// tells where it ends (all of it when none is held).
		var first sql.NullInt64
		if err := r.queryRow(ctx, `SELECT MIN(event_number) FROM subscription_notifications
			WHERE domain = ? AND subscription_id = ?`, domain, id).Scan(&first); err != nil {
			return err
		}
		sub.PrunedThrough = sub.EventsSinceStart
		if first.Valid {
			sub.PrunedThrough = first.Int64 - 1
		}
		return nil
	})
	return sub, err
}

// SearchSubscriptions lists a domain's subscriptions by id.
func (s *Store) SearchSubscriptions(ctx context.Context, domain string, statuses []string) (_ []*store.Subscription, err error) {
	defer s.wrap(&err, "SearchSubscriptions(%q)", domain)
	all, err := querySubscriptions(ctx, s.reader(), `WHERE domain = ? ORDER BY id LIMIT ?`, domain, store.MaxSearchLimit)
	if err != nil || len(statuses) == 0 {
		return all, err
	}
	var out []*store.Subscription
	for _, sub := range all {
		if slices.Contains(statuses, sub.Status) {
			out = append(out, sub)
		}
	}
	return out, nil
}

// querySubscriptions reads the subscriptions a WHERE ... clause selects.
func querySubscriptions(ctx context.Context, r q, where string, args ...any) ([]*store.Subscription, error) {
	rows, err := r.query(ctx, `SELECT `+subscriptionColumns+` FROM subscriptions `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*store.Subscription
	for rows.Next() {
		sub, err := scanSubscription(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sub)
	}
	return out, rows.Err()
}

// DeleteSubscription removes a subscription and its outbox in one
// transaction.
func (s *Store) DeleteSubscription(ctx context.Context, domain, id string) (err error) {
	defer s.wrap(&err, "DeleteSubscription(%q, %q)", domain, id)
	return s.write(ctx, func(t *tx) error {
		res, err := t.exec(ctx, `DELETE FROM subscriptions WHERE domain = ? AND id = ?`, domain, id)
		if err := changedOne(res, err, store.KindNotFound, "no such subscription"); err != nil {
			return err
		}
		_, err = t.exec(ctx, `DELETE FROM subscription_notifications WHERE domain = ? AND subscription_id = ?`, domain, id)
		return err
	})
}

// Notifications reads a range of a subscription's outbox with its events.
func (s *Store) Notifications(ctx context.Context, domain, id string, from, to int64, limit int) (_ []store.Notification, err error) {
	defer s.wrap(&err, "Notifications(%q, %q, %d, %d)", domain, id, from, to)
	var out []store.Notification
	err = s.read(ctx, func(r q) error {
		var one int
		if err := r.queryRow(ctx, `SELECT 1 FROM subscriptions WHERE domain = ? AND id = ?`, domain, id).Scan(&one); err != nil {
			return notFound(err, "subscription")
		}
		out, err = notifications(ctx, r, domain, id, from, to, limit)
		return err
	})
	return out, err
}

func notifications(ctx context.Context, r q, domain, id string, from, to int64, limit int) ([]store.Notification, error) {
	rows, err := r.query(ctx, `SELECT n.event_number, n.sent_at, e.seq, e.domain, e.topic, e.kind, e.focus_type, e.focus_id,
		e.appointment_id, e.at, e.resource
		FROM subscription_notifications n JOIN events e ON e.seq = n.event_seq
		WHERE n.domain = ? AND n.subscription_id = ? AND n.event_number >= ? AND n.event_number <= ?
		ORDER BY n.event_number LIMIT ?`, domain, id, from, to, sqlutil.Limit(limit))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Notification
	for rows.Next() {
		var n store.Notification
		e := &n.Event
		if err := rows.Scan(&n.EventNumber, atPtr{&n.SentAt}, &e.Seq, &e.Domain, &e.Topic, &e.Kind, &e.FocusType, &e.FocusID,
			&e.AppointmentID, at{&e.At}, &e.Resource); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// DispatchEvents numbers the events after the watermark for the
// subscriptions they match. The dispatcher row is the lock: SQLite's write
// transaction holds the whole database; PostgreSQL's FOR UPDATE SKIP LOCKED
// lets one replica dispatch and the others find nothing to do. Holding it
// for the transaction only (no lease to expire) means a replica that dies
// mid-dispatch hands over the moment its connection goes.
func (s *Store) DispatchEvents(ctx context.Context, limit int, match store.Matcher) (nEvents, nNotes int, err error) {
	defer s.wrap(&err, "DispatchEvents(%d)", limit)
	if limit <= 0 {
		return 0, 0, store.E(store.KindInvalid, "limit must be positive")
	}
	err = s.write(ctx, func(t *tx) error {
		nEvents, nNotes = 0, 0
		var watermark int64
		err := t.queryRow(ctx, `SELECT watermark FROM subscription_dispatch WHERE id = 1`+s.d.skipLocked()).Scan(&watermark)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // another replica is dispatching
		}
		if err != nil {
			return err
		}
		evs, err := eventsAfter(ctx, t.q, watermark, limit)
		if err != nil || len(evs) == 0 {
			return err
		}
		subs, err := querySubscriptions(ctx, t.q, `WHERE status IN `+liveStatuses+` ORDER BY domain, id`)
		if err != nil {
			return err
		}
		type key struct{ domain, topic string }
		byTopic := map[key][]*store.Subscription{}
		for _, sub := range subs {
			k := key{sub.Domain, sub.Topic}
			byTopic[k] = append(byTopic[k], sub)
		}
		pending := map[*store.Subscription][]int64{} // event seqs, in order
		for i := range evs {
			ev := &evs[i]
			for _, sub := range byTopic[key{ev.Domain, ev.Topic}] {
				if ev.Seq > sub.StartSeq && match(ev, sub) {
					pending[sub] = append(pending[sub], ev.Seq)
				}
			}
		}
		for _, sub := range subs { // in (domain, id) order: one lock order
			seqs := pending[sub]
			if len(seqs) == 0 {
				continue
			}
			first := sub.EventsSinceStart + 1
			res, err := t.exec(ctx, `UPDATE subscriptions SET events_since_start = ? WHERE domain = ? AND id = ?`,
				sub.EventsSinceStart+int64(len(seqs)), sub.Domain, sub.ID)
			if ok, err := changed(res, err); err != nil {
				return err
			} else if !ok {
				continue // deleted meanwhile
			}
			if err := insertNotifications(ctx, t, sub, first, seqs); err != nil {
				return err
			}
			nNotes += len(seqs)
		}
		nEvents = len(evs)
		_, err = t.exec(ctx, `UPDATE subscription_dispatch SET watermark = ? WHERE id = 1`, evs[len(evs)-1].Seq)
		return err
	})
	return nEvents, nNotes, err
}

func eventsAfter(ctx context.Context, r q, after int64, limit int) ([]store.Event, error) {
	rows, err := r.query(ctx, `SELECT seq, domain, topic, kind, focus_type, focus_id, appointment_id, at, resource
		FROM events WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		var e store.Event
		if err := rows.Scan(&e.Seq, &e.Domain, &e.Topic, &e.Kind, &e.FocusType, &e.FocusID, &e.AppointmentID, at{&e.At}, &e.Resource); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// changed is oneRow after the statement's own error.
func changed(res sql.Result, err error) (bool, error) {
	if err != nil {
		return false, err
	}
	return oneRow(res)
}

// insertNotifications writes the outbox rows first, first+1, ... of seqs,
// in multi-row statements.
func insertNotifications(ctx context.Context, t *tx, sub *store.Subscription, first int64, seqs []int64) error {
	const batch = 200
	for len(seqs) > 0 {
		n := min(batch, len(seqs))
		args := make([]any, 0, 4*n)
		query := `INSERT INTO subscription_notifications (domain, subscription_id, event_number, event_seq) VALUES `
		for i, seq := range seqs[:n] {
			if i > 0 {
				query += ", "
			}
			query += "(?, ?, ?, ?)"
			args = append(args, sub.Domain, sub.ID, first+int64(i), seq)
		}
		if _, err := t.exec(ctx, query, args...); err != nil {
			return err
		}
		seqs, first = seqs[n:], first+int64(n)
	}
	return nil
}

// ClaimNotifications leases the subscription due longest. See
// store.Subscriptions; the locking is ClaimDelivery's.
func (s *Store) ClaimNotifications(ctx context.Context, worker string, lease time.Duration, now time.Time) (_ *store.Subscription, _ []store.Notification, err error) {
	defer s.wrap(&err, "ClaimNotifications(%q)", worker)
	if err := sqlutil.CheckClaim(worker, lease); err != nil {
		return nil, nil, err
	}
	now = sqlutil.Time(now)
	var (
		sub   *store.Subscription
		notes []store.Notification
	)
	err = s.write(ctx, func(t *tx) error {
		var domain, id string
		err := t.queryRow(ctx, `SELECT domain, id FROM subscriptions
			WHERE status IN `+liveStatuses+`
			AND (lease_until IS NULL OR lease_until <= ?)
			AND (retry_at IS NULL OR retry_at <= ?)
			AND (status <> 'active' OR delivered_through < events_since_start OR heartbeat_at <= ?)
			ORDER BY claimed_at, domain, id LIMIT 1`+s.d.skipLocked(), s.tm(now), s.tm(now), s.tm(now)).Scan(&domain, &id)
		if err != nil {
			return notFound(err, "due subscription")
		}
		var timeout int64
		if err := t.queryRow(ctx, `SELECT timeout_ms FROM subscriptions WHERE domain = ? AND id = ?`, domain, id).Scan(&timeout); err != nil {
			return err
		}
		until := now.Add(time.Duration(timeout)*time.Millisecond + lease)
		if _, err := t.exec(ctx, `UPDATE subscriptions SET lease_owner = ?, lease_until = ?, claimed_at = ?
			WHERE domain = ? AND id = ?`, worker, s.tm(until), s.tm(now), domain, id); err != nil {
			return err
		}
		if sub, err = scanSubscription(t.queryRow(ctx, `SELECT `+subscriptionColumns+` FROM subscriptions
			WHERE domain = ? AND id = ?`, domain, id)); err != nil {
			return err
		}
		if sub.Status == store.SubscriptionRequested {
			return nil // the handshake comes first
		}
		notes, err = notifications(ctx, t.q, domain, id, sub.DeliveredThrough+1, sub.EventsSinceStart, max(1, sub.MaxCount))
		return err
	})
	return sub, notes, err
}

// SettleNotifications records an attempt's outcome under the lease.
func (s *Store) SettleNotifications(ctx context.Context, worker, domain, id string, through int64, failure string, now, retryAt time.Time, errorAfter time.Duration) (err error) {
	defer s.wrap(&err, "SettleNotifications(%q, %q, %q)", worker, domain, id)
	if err := sqlutil.CheckWorker(worker); err != nil {
		return err
	}
	now = sqlutil.Time(now)
	return s.write(ctx, func(t *tx) error {
		var (
			owner     sql.NullString
			status    string
			heartbeat int64
			delivered int64
			failing   *time.Time
		)
		err := t.queryRow(ctx, `SELECT lease_owner, status, heartbeat_ms, delivered_through, failing_since FROM subscriptions
			WHERE domain = ? AND id = ?`+s.d.forUpdate(), domain, id).Scan(&owner, &status, &heartbeat, &delivered, atPtr{&failing})
		if err != nil {
			return notFound(err, "subscription")
		}
		if owner.String != worker {
			return store.E(store.KindConflict, "subscription is not leased to %s", worker)
		}
		if failure == "" {
			var hb any
			if heartbeat > 0 {
				hb = s.tm(now.Add(time.Duration(heartbeat) * time.Millisecond))
			}
			through = max(through, delivered)
			if _, err := t.exec(ctx, `UPDATE subscriptions SET status = 'active', error = '', attempts = 0, failing_since = NULL,
				retry_at = NULL, delivered_through = ?, last_sent_at = ?, heartbeat_at = ?, lease_owner = NULL, lease_until = NULL
				WHERE domain = ? AND id = ?`, through, s.tm(now), hb, domain, id); err != nil {
				return err
			}
			_, err := t.exec(ctx, `UPDATE subscription_notifications SET sent_at = ?
				WHERE domain = ? AND subscription_id = ? AND event_number > ? AND event_number <= ?`, s.tm(now), domain, id, delivered, through)
			return err
		}
		since := now
		if failing != nil {
			since = *failing
		}
		if now.Sub(since) >= errorAfter {
			status = store.SubscriptionError
		}
		_, err = t.exec(ctx, `UPDATE subscriptions SET status = ?, error = ?, attempts = attempts + 1, failing_since = ?,
			retry_at = ?, lease_owner = NULL, lease_until = NULL WHERE domain = ? AND id = ?`,
			status, failure, s.tm(since), s.tm(sqlutil.Time(retryAt)), domain, id)
		return err
	})
}

// SubscriptionStats counts subscriptions by status and their undelivered
// notifications. The oldest pending one of each subscription is its
// delivered_through+1 (numbers go out in order), so finding it is a
// primary-key lookup per failing subscription, not a scan of the outbox.
func (s *Store) SubscriptionStats(ctx context.Context) (_ *store.SubscriptionStats, err error) {
	defer s.wrap(&err, "SubscriptionStats")
	st := &store.SubscriptionStats{ByStatus: map[string]int{}}
	err = s.read(ctx, func(r q) error {
		rows, err := r.query(ctx, `SELECT status, COUNT(*), COALESCE(SUM(CASE WHEN status IN `+liveStatuses+`
			THEN events_since_start - delivered_through ELSE 0 END), 0) FROM subscriptions GROUP BY status`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				status  string
				n       int
				pending int64
			)
			if err := rows.Scan(&status, &n, &pending); err != nil {
				return err
			}
			st.ByStatus[status] = n
			st.Pending += pending
		}
		if err := rows.Err(); err != nil {
			return err
		}
		var oldest *time.Time
		if err := r.queryRow(ctx, `SELECT MIN(e.at) FROM subscriptions s
			JOIN subscription_notifications n ON n.domain = s.domain AND n.subscription_id = s.id
				AND n.event_number = s.delivered_through + 1
			JOIN events e ON e.seq = n.event_seq
			WHERE s.status IN `+liveStatuses+` AND s.delivered_through < s.events_since_start`).Scan(atPtr{&oldest}); err != nil {
			return err
		}
		st.OldestPending = oldest
		return nil
	})
	return st, err
}
