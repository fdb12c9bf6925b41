package delivery_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/delivery"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// stored is a version as the store leaves it after CreateReport: its
// artifacts numbered, sized and hashed, each in a buffer of its length.
func stored(id string, version int, data ...[]byte) *store.Report {
	r := &store.Report{Domain: "acme", ID: id, Version: version}
	for i, d := range data {
		d = d[:len(d):len(d)]
		sum := sha256.Sum256(d)
		r.Artifacts = append(r.Artifacts, store.Artifact{Index: i, Size: int64(len(d)), SHA256: hex.EncodeToString(sum[:]), Data: d})
	}
	return r
}

// row is the artifact as ClaimDelivery scans it: no Data.
func row(r *store.Report, i int) *store.Artifact {
	a := r.Artifacts[i]
	a.Data = nil
	return &a
}

func TestHeldTakesOnce(t *testing.T) {
	h := &delivery.Held{}
	r := stored("r1", 2, []byte("one"), []byte("two"))
	h.Put(r)
	assert.Equal(t, 2, h.Len())
	assert.Equal(t, int64(6), h.Bytes())

	assert.Equal(t, []byte("two"), h.Take("acme", "r1", 2, row(r, 1)))
	assert.Nil(t, h.Take("acme", "r1", 2, row(r, 1)), "taken once: a second claim reads the store")
	assert.Nil(t, h.Take("acme", "r1", 1, row(r, 0)), "another version")
	assert.Nil(t, h.Take("other", "r1", 2, row(r, 0)), "another domain")
	assert.Equal(t, []byte("one"), h.Take("acme", "r1", 2, row(r, 0)))
	assert.Zero(t, h.Len())
	assert.Zero(t, h.Bytes())
}

// TestHeldRefusesWhatDoesNotMatch: bytes put for another size or SHA-256
// than the row the claim read are not handed out, and what cannot be
// checked so is not held.
func TestHeldRefusesWhatDoesNotMatch(t *testing.T) {
	h := &delivery.Held{}
	r := stored("r1", 1, []byte("one"), []byte("two"))
	h.Put(r)
	other := row(r, 0)
	other.SHA256 = row(r, 1).SHA256
	assert.Nil(t, h.Take("acme", "r1", 1, other), "another SHA-256")
	short := row(r, 1)
	short.Size--
	assert.Nil(t, h.Take("acme", "r1", 1, short), "another size")
	assert.Zero(t, h.Len(), "a mismatch lets the bytes go")

	unhashed := stored("r2", 1, []byte("x"))
	unhashed.Artifacts[0].SHA256 = ""
	lying := stored("r3", 1, []byte("xyz"))
	lying.Artifacts[0].Size = 2
	purged := stored("r4", 1, []byte("x"))
	purged.Artifacts[0].Data = nil
	for _, r := range []*store.Report{unhashed, lying, purged} {
		h.Put(r)
	}
	assert.Zero(t, h.Len())

	var none *delivery.Held
	none.Put(stored("r5", 1, []byte("x"))) // a worker without Held
	assert.Nil(t, none.Take("acme", "r5", 1, row(stored("r5", 1, []byte("x")), 0)))
}

func TestHeldLetsTheOldestGo(t *testing.T) {
	now := time.Now()
	h := &delivery.Held{MaxBytes: 10, MaxAge: time.Minute, Now: func() time.Time { return now }}
	a, b, c := stored("a", 1, []byte("aaaa")), stored("b", 1, []byte("bbbb")), stored("c", 1, []byte("cccc"))
	h.Put(a)
	h.Put(b)
	h.Put(c) // 12 bytes: a goes
	assert.Nil(t, h.Take("acme", "a", 1, row(a, 0)))
	assert.Equal(t, int64(8), h.Bytes())

	h.Put(stored("big", 1, []byte("more than ten")))
	assert.Equal(t, 2, h.Len(), "an artifact over the bound is not held")

	// The bound counts what a buffer takes, not what it holds: a decoder
	// sizes a value's buffer by the rest of the body.
	roomy := stored("roomy", 1, []byte("r"))
	roomy.Artifacts[0].Data = append(make([]byte, 0, 11), 'r')
	h.Put(roomy)
	assert.Nil(t, h.Take("acme", "roomy", 1, row(roomy, 0)), "11 bytes of buffer are over the bound")
	roomy.Artifacts[0].Data = append(make([]byte, 0, 6), 'r')
	h.Put(roomy) // b goes: 4 + 4 + 6 > 10
	assert.Equal(t, int64(10), h.Bytes())
	assert.Nil(t, h.Take("acme", "b", 1, row(b, 0)))
	assert.Equal(t, []byte("r"), h.Take("acme", "roomy", 1, row(roomy, 0)))

	now = now.Add(time.Minute)
	d := stored("d", 1, []byte("dd"))
	h.Put(d) // c is a minute old
	assert.Nil(t, h.Take("acme", "c", 1, row(c, 0)))
	assert.Equal(t, []byte("dd"), h.Take("acme", "d", 1, row(d, 0)))
}

// TestHeldExpiresUntouched: bytes nobody claims (another replica
// delivered them) are let go after MaxAge without another Put or Take.
func TestHeldExpiresUntouched(t *testing.T) {
	h := &delivery.Held{MaxAge: 20 * time.Millisecond}
	h.Put(stored("r1", 1, []byte("one")))
	require.Eventually(t, func() bool { return h.Len() == 0 }, 5*time.Second, 5*time.Millisecond)
	h.Put(stored("r2", 1, []byte("two"))) // the timer starts again
	require.Eventually(t, func() bool { return h.Len() == 0 }, 5*time.Second, 5*time.Millisecond)
}

// TestDeliversFromHeld: a pool's worker delivers the bytes the pool was
// handed when the version was accepted without reading the store, here
// one that could not (the artifact files are gone); a version whose bytes
// are not held is read from the store, and so set aside as unreadable.
func TestDeliversFromHeld(t *testing.T) {
	f := newFixture(t)
	ids := f.sim.PendingIDs("acme")
	pdf1, pdf2 := []byte("%PDF-1 held"), []byte("%PDF-1 not held")
	r1 := f.accept(t, "r1", ids[0], "final", "text", pdf1)
	f.accept(t, "r2", ids[1], "final", "text", pdf2)
	p := delivery.NewPool(1, *f.worker("w"))
	p.Accepted(r1)

	files, err := filepath.Glob(f.dbPath + "-artifacts/*")
	require.NoError(t, err)
	require.Len(t, files, 2)
	for _, name := range files {
		require.NoError(t, os.Remove(name))
	}
	drain(t, p.Workers[0])

	ups := f.sim.Uploads("acme", ids[0])
	require.Len(t, ups, 1)
	assert.Equal(t, pdf1, ups[0].Bytes)
	require.Len(t, f.sim.Reports("acme", ids[0]), 1)
	assert.Zero(t, p.Held.Len(), "the claim took the bytes")

	assert.Empty(t, f.sim.Uploads("acme", ids[1]))
	r2, err := f.store.Report(t.Context(), "acme", "r2")
	require.NoError(t, err)
	assert.NotEqual(t, store.DeliveryDelivered, r2.Delivery.State)
	assert.Contains(t, r2.Delivery.LastError, "artifact")
}
