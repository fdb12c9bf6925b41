package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// CreateBinary stores a Binary. See store.Binaries.
func (s *Store) CreateBinary(ctx context.Context, b *store.Binary) (err error) {
	if b != nil {
		defer s.wrap(&err, "CreateBinary(%q, %q)", b.Domain, b.ID)
	}
	if err := sqlutil.PrepareBinary(b); err != nil {
		return err
	}
	// ON CONFLICT waits for a concurrent insert of the same key to end, so
	// exactly one of racing creates wins.
	return s.write(ctx, func(tx *tx) error {
		res, err := tx.exec(ctx, `INSERT INTO binaries (domain, id, content_type, data, size, sha256, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (domain, id) DO NOTHING`,
			b.Domain, b.ID, b.ContentType, b.Data, b.Size, b.SHA256, s.tm(b.CreatedAt))
		return changedOne(res, err, store.KindConflict, "binary exists")
	})
}

// Binary returns a Binary with its bytes. See store.Binaries.
func (s *Store) Binary(ctx context.Context, domain, id string) (_ *store.Binary, err error) {
	defer s.wrap(&err, "Binary(%q, %q)", domain, id)
	b := store.Binary{Domain: domain, ID: id}
	err = s.reader().queryRow(ctx, `SELECT content_type, data, size, sha256, created_at, purged
		FROM binaries WHERE domain = ? AND id = ?`, domain, id).
		Scan(&b.ContentType, &b.Data, &b.Size, &b.SHA256, at{&b.CreatedAt}, &b.Purged)
	if err != nil {
		return nil, notFound(err, "binary")
	}
	return &b, nil
}

// idempotencySelect reads a record by its key (domain, scope, key).
const idempotencySelect = `SELECT request_hash, resource_type, resource_id, version, created_at
	FROM idempotency_keys WHERE domain = ? AND scope = ? AND key = ?`

// ClaimIdempotency inserts rec unless its key exists. See store.Idempotency.
//
// ON CONFLICT DO NOTHING waits for a concurrent insert of the same key to
// commit or roll back (SQLite: the write lock), so of racing claims
// exactly one inserts; the losers' SELECT, a new statement (at READ
// COMMITTED on PostgreSQL), then sees the winner's row.
func (s *Store) ClaimIdempotency(ctx context.Context, rec *store.IdempotencyRecord) (existing *store.IdempotencyRecord, err error) {
	if rec == nil {
		return nil, store.E(store.KindInvalid, "nil idempotency record")
	}
	defer s.wrap(&err, "ClaimIdempotency(%q, %q)", rec.Domain, rec.Scope)
	if err := sqlutil.PrepareIdempotency(rec); err != nil {
		return nil, err
	}
	err = s.write(ctx, func(tx *tx) error {
		res, err := tx.exec(ctx, `INSERT INTO idempotency_keys
			(domain, scope, key, request_hash, resource_type, resource_id, version, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (domain, scope, key) DO NOTHING`,
			rec.Domain, rec.Scope, rec.Key, rec.RequestHash, rec.ResourceType, rec.ResourceID, rec.Version, s.tm(rec.CreatedAt))
		if err != nil {
			return err
		}
		if ok, err := oneRow(res); err != nil || ok {
			return err
		}
		existing, err = scanIdempotency(tx.q, ctx, rec.Domain, rec.Scope, rec.Key)
		return err
	})
	if err != nil {
		return nil, err
	}
	return existing, nil
}

// LookupIdempotency returns the record of a key. See store.Idempotency.
func (s *Store) LookupIdempotency(ctx context.Context, domain, scope, key string) (_ *store.IdempotencyRecord, err error) {
	defer s.wrap(&err, "LookupIdempotency(%q, %q)", domain, scope)
	if domain == "" || scope == "" || key == "" {
		return nil, store.E(store.KindInvalid, "idempotency lookup without domain, scope or key")
	}
	e, err := scanIdempotency(s.reader(), ctx, domain, scope, key)
	if err != nil {
		return nil, notFound(err, "idempotency key")
	}
	return e, nil
}

func scanIdempotency(q q, ctx context.Context, domain, scope, key string) (*store.IdempotencyRecord, error) {
	e := store.IdempotencyRecord{Domain: domain, Scope: scope, Key: key}
	if err := q.queryRow(ctx, idempotencySelect, domain, scope, key).
		Scan(&e.RequestHash, &e.ResourceType, &e.ResourceID, &e.Version, at{&e.CreatedAt}); err != nil {
		return nil, err
	}
	return &e, nil
}

// PurgeBefore blanks the PHI created before cutoff, in one transaction.
// See store.Purger. Blanked values leave the file as the engine reclaims
// space (SQLite: secure_delete zeroes freed pages; PostgreSQL: dead tuples
// until (auto)vacuum, which PurgeBefore runs on the artifact chunks it
// deleted, for their pages' reuse).
func (s *Store) PurgeBefore(ctx context.Context, cutoff time.Time) (n int, err error) {
	defer s.wrap(&err, "PurgeBefore")
	c := s.tm(sqlutil.Time(cutoff))
	var chunks bool // chunk rows deleted
	err = s.write(ctx, func(tx *tx) error {
		chunks = false // as the transaction may run again
		// The versions first, and then the artifacts of exactly the
		// versions purged: selecting the artifacts by the versions'
		// state in a second statement could see another snapshot
		// (PostgreSQL, READ COMMITTED), in which a version delivered in
		// between would keep its artifacts' bytes.
		rows, err := tx.query(ctx, `UPDATE report_versions SET resource = NULL, submission = NULL, purged = TRUE
			WHERE created_at < ? AND NOT purged AND state <> 'pending'
			RETURNING domain, report_id, version`, c)
		if err != nil {
			return err
		}
		type key struct {
			domain, id string
			version    int
		}
		var keys []key
		for rows.Next() {
			var k key
			if err := rows.Scan(&k.domain, &k.id, &k.version); err != nil {
				rows.Close()
				return err
			}
			keys = append(keys, k)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		n = len(keys)
		var files []string
		for _, k := range keys {
			// RETURNING would name the new value, NULL: the names first.
			rows, err := tx.query(ctx, `SELECT data_file FROM report_artifacts
				WHERE domain = ? AND report_id = ? AND version = ? AND data_file IS NOT NULL`, k.domain, k.id, k.version)
			if err != nil {
				return err
			}
			for rows.Next() {
				var f string
				if err := rows.Scan(&f); err != nil {
					rows.Close()
					return err
				}
				files = append(files, f)
			}
			if err := rows.Close(); err != nil {
				return err
			}
			if _, err := tx.exec(ctx, `UPDATE report_artifacts SET data = NULL, data_file = NULL, chunks = NULL
				WHERE domain = ? AND report_id = ? AND version = ?`, k.domain, k.id, k.version); err != nil {
				return err
			}
			res, err := tx.exec(ctx, `DELETE FROM report_artifact_chunks
				WHERE domain = ? AND report_id = ? AND version = ?`, k.domain, k.id, k.version)
			if err != nil {
				return err
			}
			if deleted, err := res.RowsAffected(); err != nil {
				return err
			} else if deleted > 0 {
				chunks = true
			}
		}
		if af := s.d.artifactFiles(); af != nil && len(files) > 0 {
			// Removed once no committed row names them; a crash before
			// leaves them to the sweep at the next Open.
			tx.afterward(func(committed bool) {
				if committed {
					for _, f := range files {
						af.remove(f)
					}
				}
			})
		}
		res, err := tx.exec(ctx, `UPDATE binaries SET data = NULL, purged = TRUE WHERE created_at < ? AND NOT purged`, c)
		if err != nil {
			return err
		}
		k, err := res.RowsAffected()
		if err != nil {
			return err
		}
		n += int(k)
		pruned, err := pruneOutbox(ctx, tx, c)
		if err != nil {
			return err
		}
		n += pruned
		// Events still held keep their skeleton (what happened to which
		// id, when) for the subscriptions' $events; the resource as it
		// was goes.
		if res, err = tx.exec(ctx, `UPDATE events SET resource = NULL WHERE at < ? AND resource IS NOT NULL`, c); err != nil {
			return err
		}
		if k, err = res.RowsAffected(); err != nil {
			return err
		}
		n += int(k)
		// Worklist index rows of studies that left the worklist before
		// the cutoff go whole: they are PHI, and nothing answers for them.
		for _, table := range []string{"worklist_tokens", "worklist_content"} {
			if _, err := tx.exec(ctx, `DELETE FROM `+table+` WHERE EXISTS (SELECT 1 FROM worklist_index w
				WHERE w.domain = `+table+`.domain AND w.appointment_id = `+table+`.appointment_id AND w.left_at < ?)`, c); err != nil {
				return err
			}
		}
		if res, err = tx.exec(ctx, `DELETE FROM worklist_index WHERE left_at < ?`, c); err != nil {
			return err
		}
		if k, err = res.RowsAffected(); err != nil {
			return err
		}
		n += int(k)
		// The comment watch's memory (ids and times, no PHI) goes with
		// the studies it was about, and with comments QUBS stopped
		// listing: nothing else would ever remove it.
		if _, err = tx.exec(ctx, `DELETE FROM comment_studies WHERE NOT EXISTS (SELECT 1 FROM worklist_index w
				WHERE w.domain = comment_studies.domain AND w.appointment_id = comment_studies.appointment_id)`); err != nil {
			return err
		}
		_, err = tx.exec(ctx, `DELETE FROM comment_seen WHERE seen_at < ?`, c)
		return err
	})
	if err == nil && chunks {
		// The purged chunks' pages free for new ones now, not when
		// autovacuum gets to them (chunkreserve.go).
		err = s.d.vacuumChunks(ctx, s.w)
	}
	return n, err
}

// pruneOutbox deletes, inside the retention pass's transaction, the
// subscription outbox rows their endpoint accepted before cutoff, and the
// event log rows older than cutoff that nothing needs any more: passed by
// the dispatcher (seq <= watermark) and named by no notification still
// held. Event numbers are not affected (they are counted on the
// subscription's row), nor are seqs (never reused: AUTOINCREMENT,
// identity), so what follows continues the numbering.
//
// An event is kept while any older notification is held (the bound is
// the smallest seq still named, read in one pass, rather than a
// per-event lookup that would need an index on event_seq): a
// subscription whose endpoint fails keeps the log from that event on
// until it is delivered or deleted.
func pruneOutbox(ctx context.Context, tx *tx, cutoff any) (int, error) {
	res, err := tx.exec(ctx, `DELETE FROM subscription_notifications WHERE sent_at IS NOT NULL AND sent_at < ?`, cutoff)
	if err != nil {
		return 0, fmt.Errorf("pruning sent notifications: %w", err)
	}
	notes, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	var watermark int64
	var named sql.NullInt64
	if err := tx.queryRow(ctx, `SELECT (SELECT watermark FROM subscription_dispatch WHERE id = 1),
		(SELECT MIN(event_seq) FROM subscription_notifications)`).Scan(&watermark, &named); err != nil {
		return 0, fmt.Errorf("reading the outbox's oldest event: %w", err)
	}
	below := watermark + 1
	if named.Valid {
		below = min(below, named.Int64)
	}
	if res, err = tx.exec(ctx, `DELETE FROM events WHERE seq < ? AND at < ?`, below, cutoff); err != nil {
		return 0, fmt.Errorf("pruning dispatched events: %w", err)
	}
	evs, err := res.RowsAffected()
	return int(notes + evs), err
}
