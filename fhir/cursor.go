package fhir

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/http"
)

// Cursors seals paging positions into opaque next-link tokens and opens
// them again. A cursor is base64url(version | payload | HMAC-SHA256) with
// the MAC taken over the binding and the payload, so a cursor that was
// altered, or minted for another search (another binding), is refused.
//
// Cursors are signed, not encrypted: a client that decodes one sees the
// payload (a QUBS nextToken and an offset), so payloads must hold no PHI.
// They do not expire; changing the key invalidates all of them.
//
// A Cursors is safe for concurrent use.
type Cursors struct {
	key []byte
}

const (
	cursorVersion = 1
	macSize       = sha256.Size
	// maxCursorLen bounds the work a hostile cursor can cause; real ones
	// hold a QUBS token of a few hundred bytes at most.
	maxCursorLen = 4096
)

// errBadCursor is the cause kept in the 400 for logs.
var errBadCursor = errors.New("fhir: paging cursor failed authentication")

// NewCursors returns Cursors sealing under key. With an empty key a random
// one is drawn: cursors then survive neither a restart nor a hop to another
// replica, which is why production configures a shared key.
func NewCursors(key []byte) *Cursors {
	if len(key) == 0 {
		key = make([]byte, 32)
		// crypto/rand.Read never fails (Go 1.24+): it crashes the program
		// rather than return weak bytes.
		_, _ = rand.Read(key)
	}
	return &Cursors{key: append([]byte(nil), key...)}
}

// Seal returns the cursor for payload, bound to binding (for example the
// domain, resource type and normalised criteria of the search).
func (c *Cursors) Seal(binding string, payload []byte) string {
	buf := make([]byte, 0, 1+len(payload)+macSize)
	buf = append(buf, cursorVersion)
	buf = append(buf, payload...)
	buf = append(buf, c.mac(binding, payload)...)
	return base64.RawURLEncoding.EncodeToString(buf)
}

// Open returns the payload of a cursor sealed by Seal with the same key and
// binding. Anything else, whether malformed, altered or minted for another
// search, is a 400 *Error that does not say which, so the check cannot be
// probed.
func (c *Cursors) Open(binding, cursor string) ([]byte, error) {
	bad := func() error {
		return Errorf(http.StatusBadRequest, "invalid", "the paging cursor is not valid for this search; follow the links of the search that produced it").WithCause(errBadCursor)
	}
	if len(cursor) > maxCursorLen {
		return nil, bad()
	}
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil || len(raw) < 1+macSize || raw[0] != cursorVersion {
		return nil, bad()
	}
	payload, sum := raw[1:len(raw)-macSize], raw[len(raw)-macSize:]
	if !hmac.Equal(sum, c.mac(binding, payload)) {
		return nil, bad()
	}
	return payload, nil
}

// mac authenticates version, binding and payload. The binding's length
// goes first so that no split of the same bytes between binding and
// payload gives the same MAC.
func (c *Cursors) mac(binding string, payload []byte) []byte {
	h := hmac.New(sha256.New, c.key)
	var n [9]byte
	n[0] = cursorVersion
	binary.BigEndian.PutUint64(n[1:], uint64(len(binding)))
	h.Write(n[:])
	h.Write([]byte(binding))
	h.Write(payload)
	return h.Sum(nil)
}
