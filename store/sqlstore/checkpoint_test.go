package sqlstore

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// TestBackgroundCheckpoint: commits leave the WAL alone (no checkpoint on
// the write path), and the checkpointer moves what they wrote into the
// database file.
func TestBackgroundCheckpoint(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/ckpt.db"
	s, err := OpenSQLite(ctx, path)
	require.NoError(t, err)
	defer s.Close()
	var auto int
	require.NoError(t, s.w.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&auto))
	assert.Zero(t, auto, "the writer never checkpoints")

	before, err := os.Stat(path)
	require.NoError(t, err)
	data := bytes.Repeat([]byte("x"), 3<<20)
	// A Binary: a report artifact's bytes would go to a file of their own.
	require.NoError(t, s.CreateBinary(ctx, &store.Binary{Domain: "acme", ID: "bin-1", ContentType: "application/pdf", Data: data}))
	deadline := time.Now().Add(10 * time.Second)
	for {
		fi, err := os.Stat(path)
		require.NoError(t, err)
		if fi.Size() >= before.Size()+int64(len(data)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the database file is %d bytes: the WAL was not checkpointed", fi.Size())
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, s.Close())
	require.NoError(t, s.d.(*sqliteDialect).ckpt.close(), "closing twice is harmless")
}
