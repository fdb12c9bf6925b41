package sqlstore

import (
	"context"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// AppendEvents appends evs in one write transaction.
func (s *Store) AppendEvents(ctx context.Context, evs ...*store.Event) (err error) {
	defer s.wrap(&err, "AppendEvents(%d)", len(evs))
	if len(evs) == 0 {
		return nil
	}
	if err := checkEvents(evs); err != nil {
		return err
	}
	return s.write(ctx, func(t *tx) error { return s.appendEvents(ctx, t, evs) })
}

func checkEvents(evs []*store.Event) error {
	for _, e := range evs {
		if e.Domain == "" || e.Topic == "" || e.Kind == "" || e.FocusType == "" || e.FocusID == "" {
			return store.E(store.KindInvalid, "an event needs a domain, topic, kind and focus")
		}
	}
	return nil
}

// appendEvents appends evs inside t, the transaction of the change they
// record, setting Seq and (when zero) At. Every producer goes through it:
// on PostgreSQL it first takes the event log's transaction-scoped lock,
// so that seqs are committed in the order they are handed out (without
// it, a transaction holding seq 7 could commit after a reader had
// already read 8 and moved past 7 for ever). The lock is held to the
// commit, so producers of events queue behind each other for that long;
// they are few and short (a sync's batch, a delivery's end).
func (s *Store) appendEvents(ctx context.Context, t *tx, evs []*store.Event) error {
	if len(evs) == 0 {
		return nil
	}
	if err := checkEvents(evs); err != nil {
		return err
	}
	if err := s.d.lockEvents(ctx, t); err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	for _, e := range evs {
		if e.At.IsZero() {
			e.At = now
		}
		e.At = e.At.UTC().Truncate(time.Microsecond)
		if err := t.queryRow(ctx, `INSERT INTO events (domain, topic, kind, focus_type, focus_id, appointment_id, at, resource)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`,
			e.Domain, e.Topic, e.Kind, e.FocusType, e.FocusID, e.AppointmentID, s.tm(e.At), e.Resource).Scan(&e.Seq); err != nil {
			return err
		}
	}
	return nil
}

// EventsAfter reads the log after seq after.
func (s *Store) EventsAfter(ctx context.Context, after int64, limit int) (_ []store.Event, err error) {
	defer s.wrap(&err, "EventsAfter(%d, %d)", after, limit)
	if limit <= 0 {
		return nil, store.E(store.KindInvalid, "limit must be positive")
	}
	return eventsAfter(ctx, s.reader(), after, limit)
}
