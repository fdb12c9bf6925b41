package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// TakeCommentLease takes the domain's comment-watch lease with one
// conditional UPDATE, as TakeWorklistLease does; the same statement
// starts the watch anew when no watcher was active within ten leases
// (CommentPause).
func (s *Store) TakeCommentLease(ctx context.Context, domain, owner string, lease time.Duration, now time.Time) (began time.Time, ok bool, err error) {
	defer s.wrap(&err, "TakeCommentLease(%q)", domain)
	if domain == "" || owner == "" || lease <= 0 {
		return began, false, store.E(store.KindInvalid, "a comment lease needs a domain, an owner and a positive duration")
	}
	now = sqlutil.Time(now)
	err = s.write(ctx, func(t *tx) error {
		if _, err := t.exec(ctx, `INSERT INTO comment_watch (domain) VALUES (?) ON CONFLICT (domain) DO NOTHING`, domain); err != nil {
			return err
		}
		res, err := t.exec(ctx, `UPDATE comment_watch SET owner = ?, lease_until = ?, active_at = ?,
				began = CASE WHEN began IS NULL OR active_at IS NULL OR active_at < ? THEN ? ELSE began END
			WHERE domain = ? AND (owner = ? OR owner = '' OR lease_until IS NULL OR lease_until <= ?)`,
			owner, s.tm(now.Add(lease)), s.tm(now), s.tm(now.Add(-commentPause*lease)), s.tm(now), domain, owner, s.tm(now))
		if err != nil {
			return err
		}
		if ok, err = oneRow(res); err != nil || !ok {
			return err
		}
		return t.queryRow(ctx, `SELECT began FROM comment_watch WHERE domain = ?`, domain).Scan(at{&began})
	})
	return began, ok, err
}

// ReleaseCommentLease ends owner's lease at once.
func (s *Store) ReleaseCommentLease(ctx context.Context, domain, owner string) (err error) {
	defer s.wrap(&err, "ReleaseCommentLease(%q)", domain)
	return s.write(ctx, func(t *tx) error {
		_, err := t.exec(ctx, `UPDATE comment_watch SET owner = '', lease_until = NULL WHERE domain = ? AND owner = ?`, domain, owner)
		return err
	})
}

// CommentStudies orders the index's studies for the watch. The order is
// computed over the domain's rows on every call: a sort of the narrow
// index rows, cheap beside the QUBS call each returned study costs.
func (s *Store) CommentStudies(ctx context.Context, domain string, began time.Time, only []string, limit int) (_ []store.CommentStudy, err error) {
	defer s.wrap(&err, "CommentStudies(%q)", domain)
	if limit <= 0 {
		return nil, store.E(store.KindInvalid, "limit must be positive")
	}
	if only != nil && len(only) == 0 {
		return nil, nil
	}
	b := s.tm(sqlutil.Time(began))
	where, args := "", []any{domain}
	if only != nil {
		if len(only) > worklistChunk {
			only = only[:worklistChunk]
		}
		where = ` AND w.id IN (` + placeholders(len(only)) + `)`
		for _, id := range only {
			args = append(args, id)
		}
	}
	rows, err := s.reader().query(ctx, `SELECT w.appointment_id, w.id, w.patient, c.polled_at
		FROM worklist_index w LEFT JOIN comment_studies c ON c.domain = w.domain AND c.appointment_id = w.appointment_id
		WHERE w.domain = ? AND w.left_at IS NULL`+where+`
		ORDER BY CASE
				WHEN (c.polled_at IS NULL OR c.polled_at < ?) AND w.first_seen >= ? THEN 0
				WHEN c.polled_at >= ? AND w.last_updated > c.polled_at THEN 1
				WHEN c.polled_at IS NULL OR c.polled_at < ? THEN 2
				ELSE 3 END,
			c.polled_at, w.appointment_id
		LIMIT ?`, append(append(args, b, b, b, b), limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.CommentStudy
	for rows.Next() {
		var cs store.CommentStudy
		if err := rows.Scan(&cs.AppointmentID, &cs.ID, &cs.Patient, atPtr{&cs.PolledAt}); err != nil {
			return nil, err
		}
		out = append(out, cs)
	}
	return out, rows.Err()
}

// RecordComments decides what is news inside the transaction that
// records it as seen: an INSERT that finds the GUID already there (the
// bridge's own create, another study of the patient, a watcher that
// lost its lease) or an UPDATE that finds Modified not later changes
// nothing and appends nothing, so two writers never both tell one
// comment.
func (s *Store) RecordComments(ctx context.Context, domain, owner string, lease time.Duration, appointmentID string, cs []store.PolledComment, now time.Time) (n int, err error) {
	defer s.wrap(&err, "RecordComments(%q, %d)", domain, len(cs))
	if domain == "" || appointmentID == "" {
		return 0, store.E(store.KindInvalid, "a comment poll needs a domain and a study")
	}
	for _, c := range cs {
		if c.GUID == "" || c.Event == nil {
			return 0, store.E(store.KindInvalid, "a polled comment needs a GUID and an event")
		}
	}
	if owner != "" && lease <= 0 {
		return 0, store.E(store.KindInvalid, "lease must be positive")
	}
	now = sqlutil.Time(now)
	err = s.write(ctx, func(t *tx) error {
		n = 0
		// told reports whether a comment modified at m is news on this
		// study; the bridge's own comment always is.
		told := func(time.Time) bool { return true }
		if owner != "" {
			began, err := s.fenceComments(ctx, t, domain, owner, lease, now)
			if err != nil {
				return err
			}
			if told, err = s.commentBaseline(ctx, t, domain, appointmentID, began); err != nil {
				return err
			}
			if _, err := t.exec(ctx, `INSERT INTO comment_studies (domain, appointment_id, polled_at) VALUES (?, ?, ?)
				ON CONFLICT (domain, appointment_id) DO UPDATE SET polled_at = excluded.polled_at`, domain, appointmentID, s.tm(now)); err != nil {
				return err
			}
		}
		var evs []*store.Event
		var again []any
		for _, c := range cs {
			var mod *time.Time
			if !c.Modified.IsZero() {
				m := sqlutil.Time(c.Modified)
				mod = &m
			}
			res, err := t.exec(ctx, `INSERT INTO comment_seen (domain, guid, appointment_id, modified, seen_at) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (domain, guid) DO NOTHING`, domain, c.GUID, appointmentID, s.tmPtr(mod), s.tm(now))
			if err != nil {
				return err
			}
			kind := store.EventCreated
			if fresh, err := oneRow(res); err != nil {
				return err
			} else if !fresh {
				again = append(again, c.GUID)
				if mod == nil {
					continue
				}
				res, err := t.exec(ctx, `UPDATE comment_seen SET modified = ?, seen_at = ?
					WHERE domain = ? AND guid = ? AND (modified IS NULL OR modified < ?)`,
					s.tm(*mod), s.tm(now), domain, c.GUID, s.tm(*mod))
				if err != nil {
					return err
				}
				if edited, err := oneRow(res); err != nil || !edited {
					if err != nil {
						return err
					}
					continue
				}
				kind = store.EventChanged
			}
			if !told(c.Modified) {
				continue
			}
			e := *c.Event
			e.Domain, e.Topic, e.Kind, e.At = domain, store.EventTopicComments, kind, now
			evs = append(evs, &e)
		}
		// What is still listed is still seen: retention forgets only
		// what QUBS stopped listing. Once an hour is enough for that.
		for len(again) > 0 {
			k := min(len(again), worklistChunk)
			if _, err := t.exec(ctx, `UPDATE comment_seen SET seen_at = ? WHERE domain = ? AND seen_at < ? AND guid IN (`+placeholders(k)+`)`,
				append([]any{s.tm(now), domain, s.tm(now.Add(-time.Hour))}, again[:k]...)...); err != nil {
				return err
			}
			again = again[k:]
		}
		n = len(evs)
		return s.appendEvents(ctx, t, evs)
	})
	return n, err
}

// fenceComments renews owner's unexpired lease inside t and returns when
// the watch began, or fails with ErrConflict: a watcher that lost its
// lease must not record (nor tell) what it polled.
func (s *Store) fenceComments(ctx context.Context, t *tx, domain, owner string, lease time.Duration, now time.Time) (began time.Time, err error) {
	res, err := t.exec(ctx, `UPDATE comment_watch SET lease_until = ?, active_at = ? WHERE domain = ? AND owner = ? AND lease_until > ?`,
		s.tm(now.Add(lease)), s.tm(now), domain, owner, s.tm(now))
	if err := changedOne(res, err, store.KindConflict, "the comment lease is not held"); err != nil {
		return began, err
	}
	err = t.queryRow(ctx, `SELECT began FROM comment_watch WHERE domain = ?`, domain).Scan(at{&began})
	return began, err
}

// commentBaseline is the rule of a study's poll: everything is news once
// the study was polled since the watch began, or arrived on the index
// since; before that, only what QUBS modified since.
func (s *Store) commentBaseline(ctx context.Context, t *tx, domain, appointmentID string, began time.Time) (func(time.Time) bool, error) {
	var polled, arrived *time.Time
	err := t.queryRow(ctx, `SELECT polled_at FROM comment_studies WHERE domain = ? AND appointment_id = ?`, domain, appointmentID).Scan(atPtr{&polled})
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	err = t.queryRow(ctx, `SELECT first_seen FROM worklist_index WHERE domain = ? AND appointment_id = ?`, domain, appointmentID).Scan(atPtr{&arrived})
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	if polled != nil && !polled.Before(began) || arrived != nil && !arrived.Before(began) {
		return func(time.Time) bool { return true }, nil
	}
	since := began.Add(-commentClockMargin)
	return func(m time.Time) bool { return !m.IsZero() && !m.Before(since) }, nil
}

// commentClockMargin widens "modified since the watch began" on a first
// poll: QUBS's times are its clock's, in whole seconds, and a comment
// added as the watch began must not fall on the wrong side of it.
// Telling a comment a minute old as news costs less than losing one.
const commentClockMargin = time.Minute

// commentPause is, in leases, how long a domain's watch may go without
// a watcher and still be the same watch: long enough for a hand-over and
// for the backoff of a QUBS outage (comments added meanwhile are news),
// short of a pause with no comments subscription (what was added then is
// the new baseline).
const commentPause = 10

// EndCommentWatch forgets the study's polls.
func (s *Store) EndCommentWatch(ctx context.Context, domain, appointmentID string) (err error) {
	defer s.wrap(&err, "EndCommentWatch(%q)", domain)
	return s.write(ctx, func(t *tx) error {
		_, err := t.exec(ctx, `DELETE FROM comment_studies WHERE domain = ? AND appointment_id = ?`, domain, appointmentID)
		return err
	})
}
