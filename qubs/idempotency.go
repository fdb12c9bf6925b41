package qubs

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// MaxIdempotencyKeyLength is the documented limit: "a stable ASCII token
// ... up to 128 characters".
const MaxIdempotencyKeyLength = 128

// ValidateIdempotencyKey checks key against the documented rule, read as:
// 1..128 printable ASCII characters without space (0x21..0x7E), since a
// header value cannot carry control characters and leading or trailing
// spaces do not survive HTTP. It returns a KindInvalid *Error.
func ValidateIdempotencyKey(key string) error {
	if key == "" {
		return &Error{Kind: KindInvalid, Op: "qubs.ValidateIdempotencyKey", Err: fmt.Errorf("idempotency key is empty")}
	}
	if len(key) > MaxIdempotencyKeyLength {
		return &Error{Kind: KindInvalid, Op: "qubs.ValidateIdempotencyKey",
			Err: fmt.Errorf("idempotency key is %d bytes, more than %d", len(key), MaxIdempotencyKeyLength)}
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return &Error{Kind: KindInvalid, Op: "qubs.ValidateIdempotencyKey",
				Err: fmt.Errorf("idempotency key byte %d is not printable ASCII", i)}
		}
	}
	return nil
}

// maxScopeLength leaves room for "-" and 64 hex digits within 128.
const maxScopeLength = MaxIdempotencyKeyLength - 1 - 2*sha256.Size

// DeriveIdempotencyKey returns a key that depends only on scope and parts,
// so that whoever retries the same logical operation (the bridge, a second
// replica, the FHIR client) sends the same key:
// scope + "-" + hex(SHA-256(scope, parts...)).
//
// Every part is length-prefixed before hashing, so ("ab","c") and
// ("a","bc") give different keys. Characters of scope outside 0x21..0x7E
// become "_" and scope is cut to 63 bytes; the hash covers the original
// scope, so the cut never merges two scopes. The result always passes
// ValidateIdempotencyKey.
func DeriveIdempotencyKey(scope string, parts ...[]byte) string {
	h := sha256.New()
	var n [8]byte
	write := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	write([]byte(scope))
	for _, p := range parts {
		write(p)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if len(scope) > maxScopeLength {
		scope = scope[:maxScopeLength]
	}
	clean := []byte(scope)
	for i, b := range clean {
		if b < 0x21 || b > 0x7e {
			clean[i] = '_'
		}
	}
	if len(clean) == 0 {
		return sum
	}
	return string(clean) + "-" + sum
}

// checkIdempotencyKey validates a non-empty key; "" means "send none".
func checkIdempotencyKey(key string) error {
	if key == "" {
		return nil
	}
	if err := ValidateIdempotencyKey(key); err != nil {
		e := asError(err)
		e.Op = ""
		return e
	}
	return nil
}
