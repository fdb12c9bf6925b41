package deploytest

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite"
)

// TestSQLiteOnlineBackup runs the SQLite backup of docs/operations.md
// against a live store while reports keep arriving, restores the copy as
// the runbook says, opens it with the bridge's store and finds every report
// committed before the backup began, artifacts included. The backup is
// VACUUM INTO, then a copy of the artifact files; VACUUM INTO runs both
// through the sqlite3 command line (the runbook's command, when sqlite3
// is installed) and through modernc.org/sqlite (the engine the bridge
// itself links, always).
func TestSQLiteOnlineBackup(t *testing.T) {
	t.Parallel()
	backups := map[string]func(t *testing.T, live, dst string){
		"sql": func(t *testing.T, live, dst string) {
			// A connection of its own, as a separate process would have.
			db, err := sql.Open("sqlite", live+"?_pragma=busy_timeout(10000)")
			require.NoError(t, err)
			defer db.Close()
			_, err = db.Exec(`VACUUM INTO ?`, dst)
			require.NoError(t, err)
		},
	}
	if cli, err := exec.LookPath("sqlite3"); err == nil {
		backups["sqlite3"] = func(t *testing.T, live, dst string) {
			out, err := exec.Command(cli, "-bail", "-cmd", ".timeout 10000", live,
				fmt.Sprintf("VACUUM INTO '%s'", dst)).CombinedOutput()
			require.NoError(t, err, "%s", out)
		}
	} else {
		t.Log("sqlite3 is not installed: the command-line variant is not run")
	}
	for name, backup := range backups {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testBackupUnderWrites(t, backup)
		})
	}
}

func testBackupUnderWrites(t *testing.T, backup func(t *testing.T, live, dst string)) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	live := filepath.Join(dir, "qubs-fhir-bridge.db")
	st, err := sqlite.Open(ctx, live)
	require.NoError(t, err)
	defer st.Close()

	// Writers keep creating reports before, during and after the backup.
	var (
		committed sync.Map // id -> true once CreateReport returned
		n         atomic.Int64
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		werr      atomic.Value
	)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("r-%d-%d", w, i)
				r := &store.Report{
					Domain: "acme", ID: id, AppointmentID: fmt.Sprintf("A%d-%d", w, i),
					PatientRef: "Patient/P1", Status: "final",
					Resource:   []byte(`{"resourceType":"DiagnosticReport","id":"` + id + `"}`),
					Submission: []byte(`{"reportStatus":"final"}`),
					Artifacts:  []store.Artifact{{FileName: "r.pdf", ContentType: "application/pdf", Data: []byte("%PDF-1.7 " + id)}},
				}
				if err := st.CreateReport(ctx, r); err != nil {
					werr.Store(err)
					return
				}
				committed.Store(id, true)
				n.Add(1)
			}
		}()
	}
	waitFor(t, func() bool { return n.Load() >= 30 })
	var before []string
	committed.Range(func(k, _ any) bool { before = append(before, k.(string)); return true })

	dst := filepath.Join(t.TempDir(), "backup.db")
	backup(t, live, dst)
	// Then the artifact files, as the runbook says: after the copy of the
	// database, so that every file its rows name exists already (files
	// are never changed once written; those written since are extra,
	// and the restored store's sweep removes them).
	copyDir(t, live+"-artifacts", dst+"-artifacts")
	// Writes go on after the backup, as on a live bridge.
	after := n.Load()
	waitFor(t, func() bool { return n.Load() >= after+10 })
	close(stop)
	wg.Wait()
	if err, _ := werr.Load().(error); err != nil {
		t.Fatalf("a writer failed during the backup: %v", err)
	}

	// Restore: the backup file becomes the store's file, with no -wal or
	// -shm beside it, and the bridge's store opens it.
	restoreDir := t.TempDir()
	restored := filepath.Join(restoreDir, "qubs-fhir-bridge.db")
	copyFile(t, dst, restored)
	copyDir(t, dst+"-artifacts", restored+"-artifacts")
	rs, err := sqlite.Open(ctx, restored)
	require.NoError(t, err)
	defer rs.Close()
	for _, id := range before {
		r, err := rs.Report(ctx, "acme", id)
		require.NoError(t, err, "report %s, committed before the backup, is not in it", id)
		assert.JSONEq(t, `{"resourceType":"DiagnosticReport","id":"`+id+`"}`, string(r.Resource))
		a, err := rs.ReportArtifact(ctx, "acme", id, 1, 0)
		require.NoError(t, err)
		assert.Equal(t, "%PDF-1.7 "+id, string(a.Data))
	}
	total, err := rs.CountReports(ctx, "acme", store.ReportFilter{})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, total, len(before))
	assert.Less(t, int64(total), n.Load(), "the backup holds reports written after it")

	db, err := sql.Open("sqlite", restored)
	require.NoError(t, err)
	defer db.Close()
	var check string
	require.NoError(t, db.QueryRow(`PRAGMA integrity_check`).Scan(&check))
	assert.Equal(t, "ok", check)
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}

// copyDir copies the files of src into a new directory dst, as cp -a
// does with a directory of plain files.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	entries, err := os.ReadDir(src)
	require.NoError(t, err)
	require.NoError(t, os.Mkdir(dst, 0o700))
	for _, e := range entries {
		copyFile(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
	}
}

// waitFor polls cond until it holds or a minute has passed.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
