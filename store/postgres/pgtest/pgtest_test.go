package pgtest_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
)

func TestOpenIsolatesTests(t *testing.T) {
	ctx := context.Background()
	a, b := pgtest.Open(t), pgtest.Open(t)
	require.NoError(t, a.CreateBinary(ctx, &store.Binary{Domain: "acme", ID: "b1", Data: []byte("x")}))
	_, err := a.Binary(ctx, "acme", "b1")
	require.NoError(t, err)
	_, err = b.Binary(ctx, "acme", "b1")
	assert.ErrorIs(t, err, store.ErrNotFound, "each Open has its own schema")
}

func TestSchemaIsDroppedAtCleanup(t *testing.T) {
	var schema string
	t.Run("user", func(t *testing.T) {
		dsn := pgtest.DSN(t)
		u, err := url.Parse(dsn)
		require.NoError(t, err)
		schema = u.Query().Get("search_path")
		require.NotEmpty(t, schema)
		assert.Equal(t, 1, schemas(t, schema), "created")
		pgtest.Open(t) // a store opened on another schema is closed too
	})
	assert.Equal(t, 0, schemas(t, schema), "dropped when the test ended")
}

// schemas counts the schemas named name on the test server.
func schemas(t *testing.T, name string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.BaseURL(t))
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, name).Scan(&n))
	return n
}
