package sqlutil

import (
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

func TestCursorRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		created time.Time
		id      string
	}{
		{"plain", time.Date(2025, 1, 10, 3, 4, 5, 123456000, time.UTC), "r1"},
		{"before the epoch", time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC), "x"},
		{"odd id", time.Unix(0, 0).UTC(), "a.b-c\x01é"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := EncodeCursor(tt.created, tt.id)
			created, id, err := DecodeCursor(c)
			require.NoError(t, err)
			assert.True(t, tt.created.Equal(created))
			assert.Equal(t, tt.id, id)
		})
	}
}

func TestDecodeCursorRefusesGarbage(t *testing.T) {
	for _, c := range []string{"", "garbage", "r1.", "r1.!!!", "r1." + "MTIz", "r1.eDAAcjE", "r2." + EncodeCursor(time.Now(), "x")[3:]} {
		t.Run(c, func(t *testing.T) {
			_, _, err := DecodeCursor(c)
			assert.ErrorIs(t, err, store.ErrInvalid)
		})
	}
}

func TestMigrations(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	ms, err := Migrations(fstest.MapFS{
		"m/0002_two.sql": file("B"),
		"m/0001_one.sql": file("A"),
		"m/README":       file("not a migration"),
	}, "m")
	require.NoError(t, err)
	assert.Equal(t, []Migration{{1, "0001_one", "A"}, {2, "0002_two", "B"}}, ms)

	tests := []struct {
		name string
		fs   fstest.MapFS
	}{
		{"gap", fstest.MapFS{"m/0001_a.sql": file(""), "m/0003_c.sql": file("")}},
		{"duplicate", fstest.MapFS{"m/0001_a.sql": file(""), "m/0001_b.sql": file("")}},
		{"no number", fstest.MapFS{"m/init.sql": file("")}},
		{"zero", fstest.MapFS{"m/0000_a.sql": file("")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Migrations(tt.fs, "m")
			assert.Error(t, err)
		})
	}
}

func TestPrepareReport(t *testing.T) {
	created := time.Date(2025, 1, 10, 3, 4, 5, 123456789, time.FixedZone("AEDT", 11*3600))
	up := time.Now()
	r := &store.Report{Domain: "acme", ID: "r1", AppointmentID: "A1", Resource: []byte("{}"), Submission: []byte("{}"),
		CreatedAt: created,
		Artifacts: []store.Artifact{{Index: 7, Data: []byte("abc"), QUBSGUID: "old", UploadedAt: &up}},
		Delivery:  store.Delivery{State: store.DeliveryDelivered, Attempts: 3},
		Purged:    true,
	}
	require.NoError(t, PrepareReport(r))
	want := time.Date(2025, 1, 9, 16, 4, 5, 123456000, time.UTC)
	assert.Equal(t, want, r.CreatedAt, "UTC, microseconds")
	assert.Equal(t, store.Delivery{State: store.DeliveryPending, NextAttemptAt: want}, r.Delivery)
	assert.False(t, r.Purged)
	a := r.Artifacts[0]
	assert.Equal(t, 0, a.Index)
	assert.Equal(t, int64(3), a.Size)
	assert.Equal(t, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", a.SHA256)
	assert.Empty(t, a.QUBSGUID)
	assert.Nil(t, a.UploadedAt)
}

func TestLimit(t *testing.T) {
	for in, want := range map[int]int{-1: store.DefaultSearchLimit, 0: store.DefaultSearchLimit, 1: 1, store.MaxSearchLimit + 1: store.MaxSearchLimit} {
		assert.Equal(t, want, Limit(in), "Limit(%d)", in)
	}
}

func TestCheckHolder(t *testing.T) {
	tests := []struct {
		name   string
		holder Holder
		ok     bool
	}{
		{"held", Holder{Report: "r1", Version: 2, Owner: "w"}, true},
		{"released", Holder{}, false},
		{"another worker", Holder{Report: "r1", Version: 2, Owner: "w2"}, false},
		{"another version", Holder{Report: "r1", Version: 3, Owner: "w"}, false},
		{"another report", Holder{Report: "r2", Version: 2, Owner: "w"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckHolder("w", "r1", 2, tt.holder)
			if tt.ok {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, store.ErrConflict)
		})
	}
	assert.ErrorIs(t, CheckWorker(""), store.ErrInvalid)
	assert.NoError(t, CheckWorker("w"))
	assert.Equal(t, "superseded by report r2 version 1", SupersededBy("r2", 1))
}
