// Package sqlite opens the bridge's store on an embedded SQLite file
// (modernc.org/sqlite, pure Go, no cgo): the default, for one replica. The
// implementation is store/sqlstore's, with its SQLite dialect.
package sqlite

import (
	"context"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
)

// Open opens (creating it if needed) the SQLite database at path and
// applies the migrations it lacks. See sqlstore.OpenSQLite.
func Open(ctx context.Context, path string) (*sqlstore.Store, error) {
	return sqlstore.OpenSQLite(ctx, path)
}
