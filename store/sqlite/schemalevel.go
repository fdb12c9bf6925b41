package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"net/url"
	"os"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
)

// SchemaLevel reads the migrations applied to the database at path without
// creating, migrating or writing it, so that a check can run beside a
// serving bridge. A file that does not exist is New.
// Errors: store.ErrInvalid for an unusable path; anything else (not a
// database, unreadable) is internal.
func SchemaLevel(ctx context.Context, path string) (_ store.SchemaLevel, err error) {
	defer store.Wrap(&err, "sqlite.SchemaLevel")
	known, err := sqlstore.KnownMigrations("sqlite")
	if err != nil {
		return store.SchemaLevel{}, err
	}
	level := store.SchemaLevel{Known: known}
	if path == "" || path == ":memory:" {
		return level, store.E(store.KindInvalid, "sqlite path must be a plain file name")
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		level.New = true
		return level, nil
	} else if err != nil {
		return level, err
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "query_only(1)")
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return level, err
	}
	defer db.Close()
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&tables); err != nil {
		return level, err
	}
	if tables == 0 {
		return level, nil
	}
	err = db.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&level.Applied)
	return level, err
}
