package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// insertNew runs an INSERT ... ON CONFLICT DO NOTHING and turns "nothing
// inserted" into store.ErrConflict. ON CONFLICT waits for a concurrent
// insert of the same key to end, so exactly one of racing creates wins.
func (s *Store) insertNew(ctx context.Context, what, query string, args ...any) error {
	tag, err := s.pool.Exec(ctx, query, args...)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return store.E(store.KindConflict, "%s exists", what)
	}
	return nil
}

// CreateBinary stores a Binary. See store.Binaries.
func (s *Store) CreateBinary(ctx context.Context, b *store.Binary) (err error) {
	if b != nil {
		defer store.Wrap(&err, "postgres.CreateBinary(%q, %q)", b.Domain, b.ID)
	}
	if err := sqlutil.PrepareBinary(b); err != nil {
		return err
	}
	return s.insertNew(ctx, "binary", `INSERT INTO binaries (domain, id, content_type, data, size, sha256, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (domain, id) DO NOTHING`,
		b.Domain, b.ID, b.ContentType, b.Data, b.Size, b.SHA256, b.CreatedAt)
}

// Binary returns a Binary with its bytes. See store.Binaries.
func (s *Store) Binary(ctx context.Context, domain, id string) (_ *store.Binary, err error) {
	defer store.Wrap(&err, "postgres.Binary(%q, %q)", domain, id)
	b := store.Binary{Domain: domain, ID: id}
	err = s.pool.QueryRow(ctx, `SELECT content_type, data, size, sha256, created_at, purged
		FROM binaries WHERE domain = $1 AND id = $2`, domain, id).
		Scan(&b.ContentType, &b.Data, &b.Size, &b.SHA256, &b.CreatedAt, &b.Purged)
	if err != nil {
		return nil, notFound(err, "binary")
	}
	b.CreatedAt = utc(b.CreatedAt)
	return &b, nil
}

// ClaimIdempotency inserts rec unless its key exists. See store.Idempotency.
//
// ON CONFLICT DO NOTHING waits for a concurrent insert of the same key to
// commit or roll back, so of racing claims exactly one inserts; the losers'
// SELECT, a new statement at READ COMMITTED, then sees the winner's row.
func (s *Store) ClaimIdempotency(ctx context.Context, rec *store.IdempotencyRecord) (_ *store.IdempotencyRecord, err error) {
	if rec == nil {
		return nil, store.E(store.KindInvalid, "nil idempotency record")
	}
	defer store.Wrap(&err, "postgres.ClaimIdempotency(%q, %q)", rec.Domain, rec.Scope)
	if err := sqlutil.PrepareIdempotency(rec); err != nil {
		return nil, err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO idempotency_keys
		(domain, scope, key, request_hash, resource_type, resource_id, version, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (domain, scope, key) DO NOTHING`,
		rec.Domain, rec.Scope, rec.Key, rec.RequestHash, rec.ResourceType, rec.ResourceID, rec.Version, rec.CreatedAt)
	if err != nil {
		return nil, err
	}
	if tag.RowsAffected() == 1 {
		return nil, nil
	}
	e := store.IdempotencyRecord{Domain: rec.Domain, Scope: rec.Scope, Key: rec.Key}
	if err := s.pool.QueryRow(ctx, `SELECT request_hash, resource_type, resource_id, version, created_at
		FROM idempotency_keys WHERE domain = $1 AND scope = $2 AND key = $3`, rec.Domain, rec.Scope, rec.Key).
		Scan(&e.RequestHash, &e.ResourceType, &e.ResourceID, &e.Version, &e.CreatedAt); err != nil {
		return nil, err
	}
	e.CreatedAt = utc(e.CreatedAt)
	return &e, nil
}

// LookupIdempotency returns the record of a key. See store.Idempotency.
func (s *Store) LookupIdempotency(ctx context.Context, domain, scope, key string) (_ *store.IdempotencyRecord, err error) {
	defer store.Wrap(&err, "postgres.LookupIdempotency(%q, %q)", domain, scope)
	if domain == "" || scope == "" || key == "" {
		return nil, store.E(store.KindInvalid, "idempotency lookup without domain, scope or key")
	}
	e := store.IdempotencyRecord{Domain: domain, Scope: scope, Key: key}
	if err := s.pool.QueryRow(ctx, `SELECT request_hash, resource_type, resource_id, version, created_at
		FROM idempotency_keys WHERE domain = $1 AND scope = $2 AND key = $3`, domain, scope, key).
		Scan(&e.RequestHash, &e.ResourceType, &e.ResourceID, &e.Version, &e.CreatedAt); err != nil {
		return nil, notFound(err, "idempotency key")
	}
	e.CreatedAt = utc(e.CreatedAt)
	return &e, nil
}

// PurgeBefore blanks the PHI created before cutoff, in one transaction.
// See store.Purger. The blanked values linger as dead tuples until
// (auto)vacuum reclaims them.
func (s *Store) PurgeBefore(ctx context.Context, cutoff time.Time) (n int, err error) {
	defer store.Wrap(&err, "postgres.PurgeBefore")
	c := sqlutil.Time(cutoff)
	err = s.write(ctx, func(tx pgx.Tx) error {
		// One statement, so the artifacts blanked are exactly those of the
		// versions purged (two statements would see two snapshots, and a
		// version delivered in between would keep its artifacts' bytes).
		var versions int
		if err := tx.QueryRow(ctx, `WITH v AS (
				UPDATE report_versions SET resource = NULL, submission = NULL, purged = true
				WHERE created_at < $1 AND NOT purged AND state <> 'pending'
				RETURNING domain, report_id, version
			), a AS (
				UPDATE report_artifacts a SET data = NULL FROM v
				WHERE a.domain = v.domain AND a.report_id = v.report_id AND a.version = v.version
			)
			SELECT count(*) FROM v`, c).Scan(&versions); err != nil {
			return err
		}
		n = versions
		for _, q := range []string{
			`UPDATE binaries SET data = NULL, purged = true WHERE created_at < $1 AND NOT purged`,
		} {
			tag, err := tx.Exec(ctx, q, c)
			if err != nil {
				return err
			}
			n += int(tag.RowsAffected())
		}
		return nil
	})
	return n, err
}
