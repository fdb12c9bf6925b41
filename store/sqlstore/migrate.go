package sqlstore

import (
	"context"
	"fmt"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// migrate applies the engine's embedded migrations that the database lacks,
// all in one transaction recorded in schema_migrations, after the
// dialect's lock (SQLite: the write lock BEGIN IMMEDIATE takes;
// PostgreSQL: an advisory lock keyed by the schema). A concurrent Open
// waits for it and then finds the work done.
//
// goose (v3.30) was evaluated for this and not adopted; docs/store.md,
// "Migrations", says why.
func (s *Store) migrate(ctx context.Context) error {
	fsys, dir := s.d.migrations()
	ms, err := sqlutil.Migrations(fsys, dir)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *tx) error {
		if err := s.d.lockMigrations(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, s.d.versionTable()); err != nil {
			return err
		}
		applied := map[int]bool{}
		rows, err := tx.query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return err
			}
			applied[v] = true
		}
		if err := rows.Close(); err != nil {
			return err
		}
		// A version applied here but unknown to this binary comes from a
		// newer release; migrations are additive, so running on is safe
		// during a rolling upgrade.
		for _, m := range ms {
			if applied[m.Version] {
				continue
			}
			// No arguments: both drivers then run every statement of
			// the file (pgx through the simple protocol).
			if _, err := tx.tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			if _, err := tx.exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.Version, m.Name, s.tm(sqlutil.Now())); err != nil {
				return err
			}
		}
		return nil
	})
}

// KnownMigrations is how many migrations this binary carries for the
// engine ("sqlite" or "postgres"), for a check that compares it with a
// database's level without opening a Store (which would migrate).
func KnownMigrations(engine string) (int, error) {
	var d dialect = postgresDialect{}
	if engine == "sqlite" {
		d = &sqliteDialect{}
	}
	fsys, dir := d.migrations()
	ms, err := sqlutil.Migrations(fsys, dir)
	return len(ms), err
}
