// Package postgres opens the bridge's store on PostgreSQL (pgx's
// database/sql driver), for several replicas sharing one database. The
// implementation is store/sqlstore's, with its PostgreSQL dialect.
package postgres

import (
	"context"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
)

// Open connects to the PostgreSQL database at url and applies the
// migrations it lacks. See sqlstore.OpenPostgres.
func Open(ctx context.Context, url string) (*sqlstore.Store, error) {
	return sqlstore.OpenPostgres(ctx, url)
}
