// Package sqlitetest gives tests SQLite stores on files copied from one
// migrated database. Migrating a new file parses every migration and
// reloads the schema after each, in SQLite's parser transpiled to Go:
// about 290 ms under -race, where opening a copy takes about 30 ms, and
// the packages that open a store per test did it some hundred times
// (docs/performance.md, "The test suite's time").
//
// Tests of the migrations themselves open new files with sqlite.Open.
package sqlitetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlstore"
)

// migrated is the bytes of a database file at this binary's schema
// level, made once per test binary.
var migrated = sync.OnceValues(func() ([]byte, error) {
	dir, err := os.MkdirTemp("", "sqlitetest")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "template.db")
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		return nil, err
	}
	if err := st.Close(); err != nil {
		return nil, err
	}
	// The last connection's close checkpoints the WAL into the file and
	// removes it; a WAL left behind would hold part of the schema.
	if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > 0 {
		return nil, fmt.Errorf("the template's WAL was not checkpointed (%d bytes)", fi.Size())
	}
	return os.ReadFile(path)
})

// Path returns the name of a new database file in t's temporary
// directory, already migrated, for a test that opens it itself (twice,
// as two replicas; after a restart).
func Path(t testing.TB) string {
	t.Helper()
	data, err := migrated()
	require.NoError(t, err, "migrating the template database")
	path := filepath.Join(t.TempDir(), "bridge.db")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	return path
}

// Open returns a store on a new, migrated file in t's temporary
// directory, closed when the test ends.
func Open(t testing.TB) *sqlstore.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), Path(t))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}
