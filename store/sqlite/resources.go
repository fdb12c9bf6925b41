package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// insertNew runs an INSERT ... ON CONFLICT DO NOTHING and turns "nothing
// inserted" into store.ErrConflict.
func (s *Store) insertNew(ctx context.Context, what, query string, args ...any) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		if ok, err := oneRow(res); err != nil {
			return err
		} else if !ok {
			return store.E(store.KindConflict, "%s exists", what)
		}
		return nil
	})
}

// CreateBinary stores a Binary. See store.Binaries.
func (s *Store) CreateBinary(ctx context.Context, b *store.Binary) (err error) {
	if b != nil {
		defer store.Wrap(&err, "sqlite.CreateBinary(%q, %q)", b.Domain, b.ID)
	}
	if err := sqlutil.PrepareBinary(b); err != nil {
		return err
	}
	return s.insertNew(ctx, "binary", `INSERT INTO binaries (domain, id, content_type, data, size, sha256, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (domain, id) DO NOTHING`,
		b.Domain, b.ID, b.ContentType, b.Data, b.Size, b.SHA256, us(b.CreatedAt))
}

// Binary returns a Binary with its bytes. See store.Binaries.
func (s *Store) Binary(ctx context.Context, domain, id string) (_ *store.Binary, err error) {
	defer store.Wrap(&err, "sqlite.Binary(%q, %q)", domain, id)
	b := store.Binary{Domain: domain, ID: id}
	var created int64
	err = s.r.QueryRowContext(ctx, `SELECT content_type, data, size, sha256, created_at, purged
		FROM binaries WHERE domain = ? AND id = ?`, domain, id).
		Scan(&b.ContentType, &b.Data, &b.Size, &b.SHA256, &created, &b.Purged)
	if err != nil {
		return nil, notFound(err, "binary")
	}
	b.CreatedAt = fromUS(created)
	return &b, nil
}

// ClaimIdempotency inserts rec unless its key exists. The write lock makes
// the insert-or-read atomic. See store.Idempotency.
func (s *Store) ClaimIdempotency(ctx context.Context, rec *store.IdempotencyRecord) (existing *store.IdempotencyRecord, err error) {
	if rec == nil {
		return nil, store.E(store.KindInvalid, "nil idempotency record")
	}
	defer store.Wrap(&err, "sqlite.ClaimIdempotency(%q, %q)", rec.Domain, rec.Scope)
	if err := sqlutil.PrepareIdempotency(rec); err != nil {
		return nil, err
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO idempotency_keys
			(domain, scope, key, request_hash, resource_type, resource_id, version, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (domain, scope, key) DO NOTHING`,
			rec.Domain, rec.Scope, rec.Key, rec.RequestHash, rec.ResourceType, rec.ResourceID, rec.Version, us(rec.CreatedAt))
		if err != nil {
			return err
		}
		if ok, err := oneRow(res); err != nil || ok {
			return err
		}
		e := store.IdempotencyRecord{Domain: rec.Domain, Scope: rec.Scope, Key: rec.Key}
		var created int64
		if err := tx.QueryRowContext(ctx, `SELECT request_hash, resource_type, resource_id, version, created_at
			FROM idempotency_keys WHERE domain = ? AND scope = ? AND key = ?`, rec.Domain, rec.Scope, rec.Key).
			Scan(&e.RequestHash, &e.ResourceType, &e.ResourceID, &e.Version, &created); err != nil {
			return err
		}
		e.CreatedAt = fromUS(created)
		existing = &e
		return nil
	})
	if err != nil {
		return nil, err
	}
	return existing, nil
}

// LookupIdempotency returns the record of a key. See store.Idempotency.
func (s *Store) LookupIdempotency(ctx context.Context, domain, scope, key string) (_ *store.IdempotencyRecord, err error) {
	defer store.Wrap(&err, "sqlite.LookupIdempotency(%q, %q)", domain, scope)
	if domain == "" || scope == "" || key == "" {
		return nil, store.E(store.KindInvalid, "idempotency lookup without domain, scope or key")
	}
	e := store.IdempotencyRecord{Domain: domain, Scope: scope, Key: key}
	var created int64
	if err := s.r.QueryRowContext(ctx, `SELECT request_hash, resource_type, resource_id, version, created_at
		FROM idempotency_keys WHERE domain = ? AND scope = ? AND key = ?`, domain, scope, key).
		Scan(&e.RequestHash, &e.ResourceType, &e.ResourceID, &e.Version, &created); err != nil {
		return nil, notFound(err, "idempotency key")
	}
	e.CreatedAt = fromUS(created)
	return &e, nil
}

// PurgeBefore blanks the PHI created before cutoff, in one transaction.
// See store.Purger.
func (s *Store) PurgeBefore(ctx context.Context, cutoff time.Time) (n int, err error) {
	defer store.Wrap(&err, "sqlite.PurgeBefore")
	c := us(sqlutil.Time(cutoff))
	err = s.write(ctx, func(tx *sql.Tx) error {
		n = 0
		// Artifacts first: they are selected through their versions'
		// purged flag, which the next statement sets.
		if _, err := tx.ExecContext(ctx, `UPDATE report_artifacts SET data = NULL
			WHERE (domain, report_id, version) IN (
				SELECT domain, report_id, version FROM report_versions
				WHERE created_at < ? AND purged = 0 AND state <> 'pending')`, c); err != nil {
			return err
		}
		for _, q := range []string{
			`UPDATE report_versions SET resource = NULL, submission = NULL, purged = 1
				WHERE created_at < ? AND purged = 0 AND state <> 'pending'`,
			`UPDATE binaries SET data = NULL, purged = 1 WHERE created_at < ? AND purged = 0`,
		} {
			res, err := tx.ExecContext(ctx, q, c)
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += int(k)
		}
		return nil
	})
	return n, err
}
