package auditjournal

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

func record(i int) *store.AuditRecord {
	return &store.AuditRecord{
		ID: fmt.Sprintf("0190a1b2c3d4700080000000000000%02d", i), Domain: "acme",
		Recorded: time.Date(2026, 12, 3, 7, 0, 0, i*1000, time.UTC), Action: store.AuditActionRead,
		Interaction: "read", Outcome: store.AuditOutcomeSuccess, AgentID: "client-1", AgentMethod: "static",
		PatientRefs: []string{"Patient/p" + fmt.Sprint(i)}, EntityRefs: []string{"ServiceRequest/sr-" + fmt.Sprint(i)},
		CorrelationID: fmt.Sprintf("cid-%d", i), RequestPath: "/fhir/:domain/ServiceRequest/:id",
	}
}

// abandon lets go of j as a killed process would: its files stay as they
// are, and its lock is released.
func abandon(t *testing.T, j *Journal) {
	t.Helper()
	if j.cur != nil {
		require.NoError(t, j.cur.Close())
	}
	require.NoError(t, j.lock.Close())
}

func open(t *testing.T, dir string) *Journal {
	t.Helper()
	j, err := Open(dir, Options{})
	require.NoError(t, err)
	return j
}

func appendAll(t *testing.T, j *Journal, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		require.NoError(t, j.Append(record(i), uint64(i)))
	}
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
	require.NoError(t, err)
	return m
}

// TestCodecCoversEveryField sets every field of store.AuditRecord and
// wants it back from the journal's encoding: a field added to the record
// and forgotten by appendRecord would be lost at replay.
func TestCodecCoversEveryField(t *testing.T) {
	t.Parallel()
	typ := reflect.TypeFor[store.AuditRecord]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		t.Run(f.Name, func(t *testing.T) {
			var rec store.AuditRecord
			v := reflect.ValueOf(&rec).Elem().Field(i)
			switch f.Type {
			case reflect.TypeFor[string]():
				v.SetString("value of " + f.Name + " ü")
			case reflect.TypeFor[[]string]():
				v.Set(reflect.ValueOf([]string{"Patient/a", "", "Patient/b"}))
			case reflect.TypeFor[time.Time]():
				v.Set(reflect.ValueOf(time.Date(2026, 3, 29, 2, 30, 0, 123456789, time.UTC)))
			default:
				t.Fatalf("field %s of type %s: teach appendRecord and this test about it", f.Name, f.Type)
			}
			got, err := decodeRecord(appendRecord(nil, &rec))
			require.NoError(t, err)
			assert.Equal(t, rec, *got)
		})
	}
	got, err := decodeRecord(appendRecord(nil, &store.AuditRecord{}))
	require.NoError(t, err)
	assert.Equal(t, store.AuditRecord{}, *got, "the zero record")
}

func TestReadBackAfterCrash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := open(t, dir)
	assert.Empty(t, j.Replayed())
	appendAll(t, j, 1, 3)
	abandon(t, j)

	j = open(t, dir)
	got := j.Replayed()
	require.Len(t, got, 3)
	for i, r := range got {
		assert.Equal(t, record(i+1), r)
	}
	assert.Nil(t, j.Replayed(), "read back once")
	// Numbering continues after the records read back; they stay until
	// committed.
	require.Error(t, j.Append(record(9), 1), "a number out of order")
	require.NoError(t, j.Append(record(4), 4))
	abandon(t, j)

	j = open(t, dir)
	assert.Len(t, j.Replayed(), 4, "nothing committed: everything again")
	require.NoError(t, j.Committed(4))
	assert.Len(t, segments(t, dir), 1, "only the new, empty segment")
	require.NoError(t, j.Close())
	assert.Empty(t, segments(t, dir), "all committed: nothing left")
	assert.Empty(t, open(t, dir).Replayed())
}

func TestCommittedRemovesSegments(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := open(t, dir)
	frame := len(appendFrame(nil, record(1)))
	j.segmentSize = int64(len(segmentMagic) + 3*frame) // three records a segment
	appendAll(t, j, 1, 10)
	assert.Len(t, segments(t, dir), 4) // 1-3, 4-6, 7-9, 10

	require.NoError(t, j.Committed(2))
	assert.Len(t, segments(t, dir), 4, "1-3 is not all committed")
	require.NoError(t, j.Committed(7))
	assert.Len(t, segments(t, dir), 2, "1-3 and 4-6 gone")
	abandon(t, j)

	j = open(t, dir)
	var ids []string
	for _, r := range j.Replayed() {
		ids = append(ids, r.CorrelationID)
	}
	assert.Equal(t, []string{"cid-7", "cid-8", "cid-9", "cid-10"}, ids, "committed records may come back; none is missing")
	require.NoError(t, j.Close())
}

// TestCommittedEmptiesCurrent: once every record is committed, the
// segment being appended to is emptied, so that a quiet replica reads
// nothing back after a crash.
func TestCommittedEmptiesCurrent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := open(t, dir)
	appendAll(t, j, 1, 2)
	require.NoError(t, j.Committed(1))
	appendAll(t, j, 3, 3)
	require.NoError(t, j.Committed(3))
	info, err := os.Stat(j.curPath)
	require.NoError(t, err)
	assert.EqualValues(t, len(segmentMagic), info.Size())
	appendAll(t, j, 4, 4)
	abandon(t, j)
	j = open(t, dir)
	got := j.Replayed()
	require.Len(t, got, 1)
	assert.Equal(t, "cid-4", got[0].CorrelationID)
	require.NoError(t, j.Close())
}

// TestDamagedTail: a frame cut short or changed (a crash of the machine)
// ends its segment; the frames before it are read back, and the next
// segments too.
func TestDamagedTail(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		damage func(data []byte) []byte
		want   int
	}{
		{"cut in the header", func(d []byte) []byte { return append(d, 0, 0, 1) }, 3},
		{"cut in the payload", func(d []byte) []byte { return d[:len(d)-5] }, 2},
		{"a flipped bit", func(d []byte) []byte { d[len(d)-3] ^= 1; return d }, 2},
		{"a huge length", func(d []byte) []byte { return append(d, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0) }, 3},
		{"not a segment", func(d []byte) []byte { return []byte("hello") }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			j := open(t, dir)
			appendAll(t, j, 1, 3)
			path := j.curPath
			require.NoError(t, j.rotate(3))
			appendAll(t, j, 4, 4)
			abandon(t, j)
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, tc.damage(data), 0o600))

			j = open(t, dir)
			got := j.Replayed()
			require.Len(t, got, tc.want+1)
			for i, r := range got[:tc.want] {
				assert.Equal(t, record(i+1), r)
			}
			assert.Equal(t, "cid-4", got[tc.want].CorrelationID, "the next segment is read")
			require.NoError(t, j.Committed(uint64(len(got))))
			require.NoError(t, j.Close())
			_, err = os.Stat(path + damagedSuffix)
			assert.NoError(t, err, "set aside, not removed")
			assert.Empty(t, segments(t, dir))
		})
	}
}

func TestOneProcessADirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := open(t, dir)
	_, err := Open(dir, Options{})
	require.ErrorIs(t, err, ErrInUse)
	require.NoError(t, j.Close())
	j = open(t, dir)
	require.NoError(t, j.Close())
}

// TestAppendNeedsIDAndTime: a record without them would be a new record
// each time it is written again.
func TestAppendNeedsIDAndTime(t *testing.T) {
	t.Parallel()
	j := open(t, t.TempDir())
	defer j.Close()
	r := record(1)
	r.ID = ""
	require.Error(t, j.Append(r, 1))
	r = record(2)
	r.Recorded = time.Time{}
	require.Error(t, j.Append(r, 2))
	require.NoError(t, j.Append(record(3), 3), "a refused record keeps its number")
}

func BenchmarkAppend(b *testing.B) {
	j, err := Open(b.TempDir(), Options{})
	require.NoError(b, err)
	defer j.Close()
	rec := record(1)
	b.ReportAllocs()
	for i := range b.N {
		if err := j.Append(rec, uint64(i+1)); err != nil {
			b.Fatal(err)
		}
		if i%256 == 255 {
			_ = j.Committed(uint64(i + 1))
		}
	}
}

// TestNameTaken: a name in the way (not a segment readBack could read) is
// skipped, not a journal that fails from then on.
func TestNameTaken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "0000000000000000"+segmentSuffix), 0o700))
	j := open(t, dir)
	appendAll(t, j, 1, 2)
	abandon(t, j)
	j = open(t, dir)
	assert.Len(t, j.Replayed(), 2)
	require.NoError(t, j.Close())
}

// TestFull: past MaxBytes appends fail (their requests wait for the
// commit), until commits make room.
func TestFull(t *testing.T) {
	t.Parallel()
	frame := int64(len(appendFrame(nil, record(1))))
	j, err := Open(t.TempDir(), Options{MaxBytes: int64(len(segmentMagic)) + 3*frame})
	require.NoError(t, err)
	defer j.Close()
	appendAll(t, j, 1, 3)
	require.ErrorIs(t, j.Append(record(4), 4), ErrFull)
	require.NoError(t, j.Committed(4))
	require.NoError(t, j.Append(record(5), 5), "room again")
}

// TestDirectoryRemoved: a journal whose directory is removed under it
// says so at the next commit, and takes no more records (they would be
// lost with the unlinked file).
func TestDirectoryRemoved(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := open(t, dir)
	defer j.Close()
	appendAll(t, j, 1, 2)
	require.NoError(t, os.RemoveAll(dir))
	require.Error(t, j.Committed(1))
	require.Error(t, j.Append(record(3), 3))
}

// TestProbe: what check reports of a journal's directory, without
// creating or keeping anything.
func TestProbe(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a", "journal")
	st, err := Probe(dir)
	require.NoError(t, err)
	assert.False(t, st.Exists)
	_, err = os.Stat(dir)
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing created")

	j := open(t, dir)
	_, err = Probe(dir)
	require.ErrorIs(t, err, ErrInUse)
	appendAll(t, j, 1, 2)
	abandon(t, j)
	st, err = Probe(dir)
	require.NoError(t, err)
	assert.Equal(t, State{Exists: true, Segments: 1}, st)
	assert.Len(t, open(t, dir).Replayed(), 2, "the probe kept no lock")

	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err = Probe(file)
	require.ErrorContains(t, err, "not a directory")
	_, err = Probe(filepath.Join(file, "journal"))
	require.ErrorContains(t, err, "not a directory")
}
