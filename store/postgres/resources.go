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

// CreateCommunication stores a Communication. See store.Communications.
func (s *Store) CreateCommunication(ctx context.Context, c *store.Communication) (err error) {
	if c == nil {
		return store.E(store.KindInvalid, "nil communication")
	}
	defer store.Wrap(&err, "postgres.CreateCommunication(%q, %q)", c.Domain, c.ID)
	if err := sqlutil.PrepareCreated("communication", c.Domain, c.ID, &c.CreatedAt); err != nil {
		return err
	}
	c.Purged = false
	return s.insertNew(ctx, "communication", `INSERT INTO communications
		(domain, id, appointment_id, comment_guid, resource, idempotency_key, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (domain, id) DO NOTHING`,
		c.Domain, c.ID, c.AppointmentID, c.CommentGUID, c.Resource, c.IdempotencyKey, c.CreatedAt)
}

const communicationCols = `domain, id, appointment_id, comment_guid, resource, idempotency_key, created_at, purged`

func scanCommunication(row pgx.Row) (*store.Communication, error) {
	var c store.Communication
	if err := row.Scan(&c.Domain, &c.ID, &c.AppointmentID, &c.CommentGUID, &c.Resource, &c.IdempotencyKey, &c.CreatedAt, &c.Purged); err != nil {
		return nil, err
	}
	c.CreatedAt = utc(c.CreatedAt)
	return &c, nil
}

// Communication returns one Communication. See store.Communications.
func (s *Store) Communication(ctx context.Context, domain, id string) (_ *store.Communication, err error) {
	defer store.Wrap(&err, "postgres.Communication(%q, %q)", domain, id)
	c, err := scanCommunication(s.pool.QueryRow(ctx, `SELECT `+communicationCols+`
		FROM communications WHERE domain = $1 AND id = $2`, domain, id))
	if err != nil {
		return nil, notFound(err, "communication")
	}
	return c, nil
}

// CommunicationsByAppointment lists an appointment's Communications, oldest
// first. See store.Communications.
func (s *Store) CommunicationsByAppointment(ctx context.Context, domain, appointmentID string) (_ []*store.Communication, err error) {
	defer store.Wrap(&err, "postgres.CommunicationsByAppointment(%q, %q)", domain, appointmentID)
	rows, err := s.pool.Query(ctx, `SELECT `+communicationCols+`
		FROM communications WHERE domain = $1 AND appointment_id = $2 ORDER BY created_at, id`, domain, appointmentID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cs []*store.Communication
	for rows.Next() {
		c, err := scanCommunication(rows)
		if err != nil {
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, rows.Err()
}

// CreateDocumentReference stores a DocumentReference. See
// store.DocumentReferences.
func (s *Store) CreateDocumentReference(ctx context.Context, d *store.DocumentReference) (err error) {
	if d == nil {
		return store.E(store.KindInvalid, "nil document reference")
	}
	defer store.Wrap(&err, "postgres.CreateDocumentReference(%q, %q)", d.Domain, d.ID)
	if err := sqlutil.PrepareCreated("document reference", d.Domain, d.ID, &d.CreatedAt); err != nil {
		return err
	}
	d.Purged = false
	return s.insertNew(ctx, "document reference", `INSERT INTO document_references
		(domain, id, appointment_id, attachment_guid, resource, created_at)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (domain, id) DO NOTHING`,
		d.Domain, d.ID, d.AppointmentID, d.AttachmentGUID, d.Resource, d.CreatedAt)
}

// DocumentReference returns one DocumentReference. See
// store.DocumentReferences.
func (s *Store) DocumentReference(ctx context.Context, domain, id string) (_ *store.DocumentReference, err error) {
	defer store.Wrap(&err, "postgres.DocumentReference(%q, %q)", domain, id)
	d := store.DocumentReference{Domain: domain, ID: id}
	err = s.pool.QueryRow(ctx, `SELECT appointment_id, attachment_guid, resource, created_at, purged
		FROM document_references WHERE domain = $1 AND id = $2`, domain, id).
		Scan(&d.AppointmentID, &d.AttachmentGUID, &d.Resource, &d.CreatedAt, &d.Purged)
	if err != nil {
		return nil, notFound(err, "document reference")
	}
	d.CreatedAt = utc(d.CreatedAt)
	return &d, nil
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
			`UPDATE communications SET resource = NULL, purged = true WHERE created_at < $1 AND NOT purged`,
			`UPDATE document_references SET resource = NULL, purged = true WHERE created_at < $1 AND NOT purged`,
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
