package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/storetest"
)

// open is a storetest.Opener: a fresh database file in the test's temp dir.
func open(t *testing.T) func(ctx context.Context) (store.Store, error) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	return func(ctx context.Context) (store.Store, error) { return sqlite.Open(ctx, path) }
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := open(t)(context.Background())
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, s.Close()) })
		return s
	})
}

func TestReplicas(t *testing.T) {
	storetest.RunReplicas(t, open)
}

func TestOpenRefusesUnusablePaths(t *testing.T) {
	for _, path := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro"} {
		t.Run(path, func(t *testing.T) {
			_, err := sqlite.Open(context.Background(), path)
			assert.ErrorIs(t, err, store.ErrInvalid)
		})
	}
}

func TestFileIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := sqlite.Open(context.Background(), path)
	require.NoError(t, err)
	defer s.Close()
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), p)
	}
}
