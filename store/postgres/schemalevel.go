package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
)

// SchemaLevel reads the migrations applied to the first schema of the
// URL's search_path without migrating or writing anything, so that a check
// can run beside serving replicas.
// Errors: store.ErrInvalid for an unparsable url; anything else
// (unreachable, refused) is internal.
func SchemaLevel(ctx context.Context, url string) (_ store.SchemaLevel, err error) {
	defer store.Wrap(&err, "postgres.SchemaLevel")
	known, err := sqlstore.KnownMigrations("postgres")
	if err != nil {
		return store.SchemaLevel{}, err
	}
	level := store.SchemaLevel{Known: known}
	// pgxpool's parser, as Open's: it accepts (and drops) the pool_*
	// parameters a BRIDGE_STORE URL may carry.
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error may quote the URL, password included.
		return level, store.E(store.KindInvalid, "unparsable PostgreSQL URL")
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return level, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return level, err
	}
	if !exists {
		return level, nil
	}
	err = conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&level.Applied)
	return level, err
}
