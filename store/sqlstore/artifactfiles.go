package sqlstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// artifactFiles keeps the bytes of SQLite's report artifacts in files
// beside the database (migration 0012), one file per artifact row, named
// in the row's data_file. Inside the database a 2 MiB PDF is 512 overflow
// pages: copied twice into SQLite's memory, written as 512 WAL frames (two
// system calls each) inside the request, then copied again into the
// database by the checkpointer and read back page by page by the delivery
// worker. As a file it is one write, one fsync and one read.
//
// Names are random, never derived from the artifact: a name belongs to
// exactly one row, so a file can be removed as soon as its row no longer
// names it (a rollback, a purge) without asking who else uses it. The
// bytes are on disk (fsync) before the transaction naming them commits,
// so a commit that survives a crash, even a power loss, names a whole
// file; a file whose transaction rolled back is removed then, and one
// left by a crash before the commit (or after a purge's commit, before
// its removal) by sweep.
type artifactFiles struct {
	dir string
}

// artifactDirSuffix follows the database's file name, as SQLite's -wal and
// -shm do, so that the three move and are backed up together.
const artifactDirSuffix = "-artifacts"

// orphanAge is how old an unreferenced file must be before sweep removes
// it: far longer than any write transaction, so that a file another
// process (serve beside a CLI command) has written and is about to
// commit is never taken.
const orphanAge = time.Hour

// openArtifactFiles creates the directory (the bytes are PHI: the
// bridge's user only).
func openArtifactFiles(dbPath string) (*artifactFiles, error) {
	dir := dbPath + artifactDirSuffix
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the artifact directory: %w", err)
	}
	return &artifactFiles{dir: dir}, nil
}

// write stores data in a new file, synced with its directory entry, and
// returns its name. SQLite's own commits are not synced (synchronous
// NORMAL: a power loss may lose the last ones), but they may reach the
// disk by the kernel's writeback before a file written beside them does:
// without the fsync, a commit could survive a power loss naming a file
// that did not.
func (f *artifactFiles) write(data []byte) (name string, err error) {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails
	name = hex.EncodeToString(b[:])
	fh, err := os.OpenFile(filepath.Join(f.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("writing an artifact file: %w", err)
	}
	_, err = fh.Write(data)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncFile(f.dir)
	}
	if err != nil {
		f.remove(name)
		return "", fmt.Errorf("writing an artifact file: %w", err)
	}
	return name, nil
}

// writeAll writes the bytes of each artifact that has some and returns
// the files' names, "" for an artifact without bytes; on an error it
// leaves no file behind.
func (f *artifactFiles) writeAll(artifacts []store.Artifact) ([]string, error) {
	names := make([]string, len(artifacts))
	for i, a := range artifacts {
		if a.Data == nil {
			continue
		}
		name, err := f.write(a.Data)
		if err != nil {
			f.removeAll(names)
			return nil, err
		}
		names[i] = name
	}
	return names, nil
}

// removeAll removes the files writeAll wrote.
func (f *artifactFiles) removeAll(names []string) {
	for _, n := range names {
		f.remove(n)
	}
}

// read returns a file's bytes, which must be size long: a file that is
// missing or of another size is an error, never an artifact silently
// empty or cut.
func (f *artifactFiles) read(name string, size int64) ([]byte, error) {
	if !validFileName(name) {
		return nil, &artifactFileError{permanent: true, err: fmt.Errorf("artifact file name %q is not one the store writes", name)}
	}
	data, err := os.ReadFile(filepath.Join(f.dir, name))
	if err != nil {
		return nil, &artifactFileError{permanent: errors.Is(err, fs.ErrNotExist), err: fmt.Errorf("reading an artifact file: %w", err)}
	}
	if int64(len(data)) != size {
		return nil, &artifactFileError{permanent: true, err: fmt.Errorf("artifact file %s holds %d bytes, its row says %d", name, len(data), size)}
	}
	return data, nil
}

// artifactFileError is an artifact whose bytes could not be read from
// its file. permanent: the file is missing or of the wrong size, so no
// retry will read it; otherwise the error may pass (I/O, permissions).
// ClaimDelivery sets such a version aside rather than stop the queue.
type artifactFileError struct {
	index     int
	permanent bool
	err       error
}

func (e *artifactFileError) Error() string { return e.err.Error() }
func (e *artifactFileError) Unwrap() error { return e.err }

// reason is the error for last_error: the file's name and what is
// wrong, no path, no PHI.
func (e *artifactFileError) reason() string {
	if e.permanent {
		return "the file is missing or damaged"
	}
	return "an error reading its file (" + errors.Unwrap(e.err).Error() + ")"
}

// remove deletes a file no row names any more. A failure leaves it to
// sweep.
func (f *artifactFiles) remove(name string) {
	if validFileName(name) {
		_ = os.Remove(filepath.Join(f.dir, name))
	}
}

// syncFile fsyncs a file or directory by name.
func syncFile(path string) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	return fh.Sync()
}

// sweep removes the files older than orphanAge that no row names: left by
// a crash between a file's write and its transaction's commit, or between
// a purge's commit and its removals.
func (f *artifactFiles) sweep(ctx context.Context, s *Store) (removed int, err error) {
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return 0, err
	}
	named := map[string]bool{}
	rows, err := s.reader().query(ctx, `SELECT data_file FROM report_artifacts WHERE data_file IS NOT NULL`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return 0, err
		}
		named[n] = true
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	cutoff := time.Now().Add(-orphanAge)
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || named[e.Name()] || !validFileName(e.Name()) || !info.ModTime().Before(cutoff) {
			continue
		}
		f.remove(e.Name())
		removed++
	}
	return removed, nil
}

// validFileName reports whether name is one write makes (32 lower-case hex
// digits), so that a name read from the database cannot point elsewhere.
func validFileName(name string) bool {
	if len(name) != 32 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
