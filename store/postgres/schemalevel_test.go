package postgres_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
)

// TestSchemaLevel: an empty schema is behind, a migrated one up to date,
// one a newer release migrated ahead; reading it writes nothing.
func TestSchemaLevel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	l, err := postgres.SchemaLevel(ctx, dsn)
	require.NoError(t, err)
	assert.Equal(t, "behind", l.State())
	assert.Zero(t, l.Applied)

	s, err := postgres.Open(ctx, dsn)
	require.NoError(t, err)
	defer s.Close()
	l, err = postgres.SchemaLevel(ctx, dsn)
	require.NoError(t, err)
	assert.Equal(t, "up to date", l.State())
	assert.Equal(t, l.Known, l.Applied)

	conn, err := pgxpool.New(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES (999, '0999_future')`)
	require.NoError(t, err)
	l, err = postgres.SchemaLevel(ctx, dsn)
	require.NoError(t, err)
	assert.Equal(t, "ahead", l.State())
	assert.Equal(t, 999, l.Applied)

	_, err = postgres.SchemaLevel(ctx, "postgres://u:secret@[::1")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "secret")
}
