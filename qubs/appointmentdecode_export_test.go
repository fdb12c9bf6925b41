package qubs

// DecodeFast exposes the fast path of decodeJSON to package qubs_test: ok
// is false when it leaves b to encoding/json.
func DecodeFast(b []byte, out FastDecoder) (ok bool) { return out.decodeFast(b) }

// FastDecoder is fastDecoder, for package qubs_test.
type FastDecoder = fastDecoder
