// Package auditjournal keeps the audit records the store has not
// committed yet in local files, so that a crash of the bridge's process
// loses none of them while requests do not wait for a database commit.
//
// Each record is appended to the current segment with one write(2) before
// the answer it is about is sent, and without fsync: the kernel holds it
// from then on, so a killed process (SIGKILL, the OOM killer, a panic)
// loses nothing; a crash of the machine can lose what the kernel had not
// written yet, as the store's own asynchronous commits can. Segments whose
// records are all committed are removed; at start, the records of the
// segments a previous process left are read back to be written to the
// store again (the store skips those it has: an audit id is written once).
//
// A directory serves one process at a time: Open takes an exclusive lock
// on it and fails while another process holds it, so that two replicas
// never replay, or remove, each other's records.
package auditjournal

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// DefaultSegmentSize is the size past which appends go to a new segment.
// A segment is removed once all its records are committed, so this bounds
// what is kept of committed records, and read back at start, beside those
// not committed yet (at most BRIDGE_AUDIT_BUFFER): about 4,000 reads'
// records, a few hundred milliseconds of writing again after a crash.
const DefaultSegmentSize = 1 << 20

// DefaultMaxBytes bounds the journal's segments together: past it an
// append fails (its request then waits for the commit), so that a store
// down for long, with a large BRIDGE_AUDIT_BUFFER, cannot fill the volume
// (the Helm chart's emptyDir is 64 MiB, and a pod whose emptyDir outgrows
// its limit is evicted, its journal deleted).
const DefaultMaxBytes = 32 << 20

// ErrFull is returned by Append when the journal holds MaxBytes.
var ErrFull = errors.New("audit journal full")

// ErrInUse is returned by Open when another process holds the directory.
var ErrInUse = errors.New("audit journal directory in use by another process")

const (
	segmentSuffix = ".seg"
	damagedSuffix = ".damaged"
	lockName      = "LOCK"
)

// Journal is the directory's segments. It is not safe for concurrent use:
// the audit writer calls it under its own lock, which also keeps appends
// in the order of the sequence numbers Committed is given.
type Journal struct {
	dir  string
	log  *slog.Logger
	lock *os.File // holds the directory's lock while open

	cur     *os.File // the segment appended to
	curPath string
	curSize int64
	// nextName numbers the next segment; names sort in creation order.
	nextName uint64
	// full are the segments appended to before cur, oldest first, each
	// with the sequence number of its last record.
	full []segment
	// last is the sequence number of the last record appended (or read
	// back at Open); committed the last one Committed was given.
	last, committed uint64

	replayed    []*store.AuditRecord
	buf         []byte
	segmentSize int64
	// size is the segments' bytes together (full and cur), at most
	// maxBytes.
	size, maxBytes int64
}

type segment struct {
	path string
	last uint64
	size int64
	// damaged is set for a segment read back with damaged bytes after its
	// records: once they are committed it is set aside (renamed
	// .damaged), not removed, for whoever wants to look at it.
	damaged bool
}

// Options tune Open; the zero value is the defaults.
type Options struct {
	// Logger says what was read back or left out at Open, and what could
	// not be closed; nil discards.
	Logger *slog.Logger
	// SegmentSize is the size past which appends go to a new segment; 0
	// means DefaultSegmentSize.
	SegmentSize int64
	// MaxBytes bounds the segments together; 0 means DefaultMaxBytes.
	MaxBytes int64
}

// Dir resolves BRIDGE_AUDIT_JOURNAL for the store dsn (BRIDGE_STORE):
// auto is a directory beside a SQLite database (its path and
// "-audit-journal"; none on a system without flock, where the journal
// cannot lock its directory), and no journal with PostgreSQL, whose
// replicas may have no disk of their own (the Helm chart gives each an
// emptyDir and names it); off is no journal; "" means none; anything else
// is the directory.
func Dir(setting, dsn string) string {
	switch setting {
	case "off", "":
		return ""
	case "auto":
		if path, ok := strings.CutPrefix(dsn, "sqlite:"); ok && path != "" && Supported {
			return path + "-audit-journal"
		}
		return ""
	}
	return setting
}

// Open locks dir, creating it if need be, and reads back the records a
// previous process left there, which Replayed returns. Those records are
// numbered 1 to len(Replayed()), and records appended after them continue
// the count: Append's first sequence number is len(Replayed())+1.
func Open(dir string, opts Options) (*Journal, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	size, maxBytes := opts.SegmentSize, opts.MaxBytes
	if size <= 0 {
		size = DefaultSegmentSize
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit journal: %w", err)
	}
	lock, err := lockDir(filepath.Join(dir, lockName))
	if err != nil {
		return nil, fmt.Errorf("audit journal %s: %w", dir, err)
	}
	j := &Journal{dir: dir, log: log, lock: lock, segmentSize: size, maxBytes: maxBytes}
	if err := j.readBack(); err != nil {
		lock.Close()
		return nil, err
	}
	if err := j.newSegment(); err != nil {
		lock.Close()
		return nil, err
	}
	return j, nil
}

// Replayed returns the records read back at Open, once; later calls
// return nil. They may include records the store committed already (the
// process died before their segment was removed).
func (j *Journal) Replayed() []*store.AuditRecord {
	r := j.replayed
	j.replayed = nil
	return r
}

// segmentFiles lists the segment files in dir, oldest first, and the number
// the next one should take: regular files named by a hex number, as
// newSegment names them; anything else is not the journal's.
func segmentFiles(dir string) (names []string, next uint64, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, fmt.Errorf("audit journal: %w", err)
	}
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), segmentSuffix); ok && e.Type().IsRegular() {
			n, err := strconv.ParseUint(name, 16, 64)
			if err != nil {
				continue // not one of ours
			}
			names = append(names, e.Name())
			next = max(next, n+1)
		}
	}
	slices.Sort(names) // fixed-width hex: creation order
	return names, next, nil
}

// readBack reads every segment in the directory, oldest first. Each is
// kept (as full) until the records read from it are committed.
func (j *Journal) readBack() error {
	names, next, err := segmentFiles(j.dir)
	if err != nil {
		return err
	}
	j.nextName = max(j.nextName, next)
	for _, name := range names {
		path := filepath.Join(j.dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("audit journal: %w", err)
		}
		var recs []*store.AuditRecord
		rest := len(data)
		if body, ok := bytes.CutPrefix(data, []byte(segmentMagic)); ok {
			recs, rest = readFrames(body)
		}
		if rest > 0 {
			// A crash of the machine mid-write, or a file that is not a
			// segment (of another format version, say): what follows the
			// damage cannot be trusted.
			j.log.Warn("audit journal: a segment ends in damaged bytes, left out and set aside", "segment", name,
				"records", len(recs), "bytes_left_out", rest)
		}
		seg := segment{path: path, last: j.last + uint64(len(recs)), size: int64(len(data)), damaged: rest > 0}
		if len(recs) == 0 {
			// Nothing to write again: gone now (set aside if damaged).
			if err := dispose(seg); err != nil {
				return fmt.Errorf("audit journal: %w", err)
			}
			continue
		}
		j.replayed = append(j.replayed, recs...)
		j.last, j.size = seg.last, j.size+seg.size
		j.full = append(j.full, seg)
	}
	if len(j.replayed) > 0 {
		j.log.Info("audit journal: records read back to be written again", "records", len(j.replayed), "segments", len(j.full))
	}
	return nil
}

func (j *Journal) newSegment() error {
	var path string
	var f *os.File
	for {
		path = filepath.Join(j.dir, fmt.Sprintf("%016x%s", j.nextName, segmentSuffix))
		var err error
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
		if errors.Is(err, os.ErrExist) {
			j.nextName++ // not one readBack saw (not a regular file): skip its name
			continue
		}
		if err != nil {
			return fmt.Errorf("audit journal: %w", err)
		}
		break
	}
	if _, err := f.WriteString(segmentMagic); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("audit journal: %w", err)
	}
	j.nextName++
	j.cur, j.curPath, j.curSize = f, path, int64(len(segmentMagic))
	j.size += j.curSize
	return nil
}

// Append writes rec, numbered seq (the one after the last appended), to
// the current segment with one write. rec's ID and Recorded must be set:
// they are what makes writing it again harmless. An error means rec is not
// in the journal; the journal stays usable for the next records.
func (j *Journal) Append(rec *store.AuditRecord, seq uint64) error {
	if seq != j.last+1 {
		return fmt.Errorf("audit journal: record %d appended after %d", seq, j.last)
	}
	j.last = seq // numbered even if it fails: Committed counts every record
	if rec.ID == "" || rec.Recorded.IsZero() {
		return errors.New("audit journal: a record needs its id and time before it is journaled")
	}
	if j.cur == nil {
		if err := j.newSegment(); err != nil {
			return err
		}
	}
	j.buf = appendFrame(j.buf[:0], rec)
	frame := int64(len(j.buf))
	switch {
	case frame-frameHeader > maxFrame:
		return fmt.Errorf("audit journal: a record of %d bytes: it could not be read back", frame)
	case j.size+frame > j.maxBytes:
		return fmt.Errorf("%w: %d bytes of records not committed yet", ErrFull, j.size)
	}
	if j.curSize+frame > j.segmentSize && j.curSize > int64(len(segmentMagic)) {
		if err := j.rotate(seq - 1); err != nil {
			return err
		}
	}
	n, err := j.cur.Write(j.buf)
	if cap(j.buf) > 64<<10 {
		j.buf = nil // a page's record now and then; do not keep its buffer
	}
	if err != nil {
		// A part of the frame may be in the file; cut it off, or the
		// frames after it could not be read back. If that fails too, the
		// segment ends here (the damaged tail is all that is lost of it).
		if terr := j.cur.Truncate(j.curSize); terr != nil {
			j.retire(seq - 1)
		}
		return fmt.Errorf("audit journal: %w", err)
	}
	j.curSize += int64(n)
	j.size += int64(n)
	return nil
}

// rotate starts a new segment after the current one, whose records are
// numbered up to last.
func (j *Journal) rotate(last uint64) error {
	j.retire(last)
	return j.newSegment()
}

// retire closes the current segment, to be removed once last is
// committed; the next Append opens a new one.
func (j *Journal) retire(last uint64) {
	if j.cur == nil {
		return
	}
	if err := j.cur.Close(); err != nil {
		j.log.Warn("audit journal: closing a segment", "error", err.Error())
	}
	j.full = append(j.full, segment{path: j.curPath, last: last, size: j.curSize})
	j.cur = nil
}

// Committed is told that every record numbered up to seq is in the store:
// the segments holding only such records are removed, and when that is
// every record appended, the current segment is emptied.
func (j *Journal) Committed(seq uint64) error {
	j.committed = max(j.committed, seq)
	var errs []error
	removed := 0
	for _, s := range j.full {
		if s.last > seq {
			break
		}
		if err := dispose(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			break // kept: tried again at the next commit
		}
		j.size -= s.size
		removed++
	}
	j.full = slices.Delete(j.full, 0, removed)
	if j.cur != nil && unlinked(j.cur) {
		// Its directory was removed under the process: an append there
		// would be lost with it. The next append fails, or starts a
		// segment in a directory made anew.
		errs = append(errs, errors.New("the current segment was removed"))
		j.retire(j.last)
	}
	if seq >= j.last && j.cur != nil && j.curSize > int64(len(segmentMagic)) {
		if err := j.cur.Truncate(int64(len(segmentMagic))); err != nil {
			errs = append(errs, err)
		} else {
			j.size -= j.curSize - int64(len(segmentMagic))
			j.curSize = int64(len(segmentMagic))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("audit journal: %w", err)
	}
	return nil
}

// Close closes the segments and releases the directory. When every record
// is committed (Committed was given the last one) the segments are
// removed; otherwise they stay, to be read back by the next Open.
func (j *Journal) Close() error {
	var errs []error
	j.retire(j.last)
	if j.committed >= j.last {
		for _, s := range j.full {
			if err := dispose(s); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		j.full = nil
	}
	errs = append(errs, j.lock.Close()) // closing the file releases its lock
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("audit journal: %w", err)
	}
	return nil
}

// dispose removes a segment whose records are all committed, or sets it
// aside when it was read back damaged.
func dispose(s segment) error {
	if s.damaged {
		return os.Rename(s.path, s.path+damagedSuffix)
	}
	return os.Remove(s.path)
}

// State is what Probe found of a journal's directory.
type State struct {
	// Exists is false for a directory Open would create.
	Exists bool
	// Segments counts the segments a previous process left, which Open
	// will read back.
	Segments int
}

// Probe checks what Open needs of dir without creating or locking
// anything (`qubs-fhir-bridge check`): a directory, or the nearest
// existing one above it, that this process may write, and no other
// process holding it (ErrInUse).
func Probe(dir string) (State, error) {
	info, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		for up := filepath.Dir(dir); ; up = filepath.Dir(up) {
			if info, err := os.Stat(up); err == nil {
				if !info.IsDir() {
					return State{}, fmt.Errorf("audit journal %s: %s is not a directory", dir, up)
				}
				if err := writable(up); err != nil {
					return State{}, fmt.Errorf("audit journal %s cannot be created: %w", dir, err)
				}
				return State{}, nil
			}
			if up == filepath.Dir(up) {
				return State{}, fmt.Errorf("audit journal %s: no directory above it exists", dir)
			}
		}
	}
	if err != nil {
		return State{}, fmt.Errorf("audit journal: %w", err)
	}
	if !info.IsDir() {
		return State{}, fmt.Errorf("audit journal %s is not a directory", dir)
	}
	if err := writable(dir); err != nil {
		return State{}, fmt.Errorf("audit journal %s: %w", dir, err)
	}
	if err := probeLock(filepath.Join(dir, lockName)); err != nil {
		return State{}, fmt.Errorf("audit journal %s: %w", dir, err)
	}
	segs, _, err := segmentFiles(dir)
	if err != nil {
		return State{}, err
	}
	return State{Exists: true, Segments: len(segs)}, nil
}
