package fhir

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func spoolBoth(t *testing.T, body string, opt SpoolOptions) []*Spooled {
	t.Helper()
	var out []*Spooled
	for _, r := range []func() *strings.Reader{func() *strings.Reader { return strings.NewReader(body) }} {
		sp, err := SpoolInline(r(), opt)
		require.NoError(t, err)
		// One byte per read: every escape and token crosses a boundary.
		sp2, err := SpoolInline(iotest.OneByteReader(r()), opt)
		require.NoError(t, err)
		out = append(out, sp, sp2)
	}
	return out
}

func TestSpoolInline(t *testing.T) {
	pdf := bytes.Repeat([]byte("%PDF-1.4 0123456789"), 5001) // over one 32 KiB chunk of base64, no padding
	enc := base64.StdEncoding.EncodeToString(pdf)
	opt := SpoolOptions{Array: "presentedForm", MaxDecoded: 1 << 19, KeepRaw: 64, SizeHint: -1, HashValues: true}
	cases := []struct {
		name    string
		data    string // the JSON string token of presentedForm[1].data
		want    []byte
		invalid bool
		tooBig  bool
	}{
		{"plain", `"` + enc + `"`, pdf, false, false},
		{"escaped slash and \\u", `"` + strings.ReplaceAll(strings.Replace(enc, "A", `\u0041`, 3), "/", `\/`) + `"`, pdf, false, false},
		{"whitespace", `"` + enc[:8] + ` \n\r\t ` + enc[8:] + `"`, pdf, false, false},
		{"wrapped every 76 characters", `"` + wrap(enc, `\r\n`, 76) + `"`, pdf, false, false},
		// Short pieces gathered, then one decoded where it lies, then short
		// ones again: the order of the bytes survives the gathering.
		{"wrapped unevenly", `"` + wrap(enc[:4000], `\n  `, 76) + `\n` + enc[4000:40000] + `\n` + wrap(enc[40000:], ` `, 64) + `"`, pdf, false, false},
		{"padding", `"QQ=="`, []byte("A"), false, false},
		{"empty", `""`, []byte{}, false, false},
		{"bad character", `"QQ*="`, nil, true, false},
		{"bad length", `"QQ="`, nil, true, false},
		{"data after padding", `"QQ==QUFB"`, nil, true, false},
		{"escaped non-base64", `"QQ\"="`, nil, true, false},
		{"too big", `"` + enc + enc + enc + enc + enc + enc + enc + enc + enc + enc + enc + `"`, nil, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"resourceType":"DiagnosticReport", "presentedForm":[{"contentType":"text/plain","data":"eA=="},{"data":` + tc.data + `,"contentType":"application/pdf"}],"contained":[{"resourceType":"Binary","data":"QQ=="}]}`
			for _, sp := range spoolBoth(t, body, opt) {
				require.Len(t, sp.Inline, 2, "only presentedForm data, not the contained Binary's")
				assert.Equal(t, 0, sp.Inline[0].Index)
				assert.Equal(t, []byte("x"), sp.Inline[0].Data)
				d := sp.Inline[1]
				assert.Equal(t, 1, d.Index)
				assert.Equal(t, tc.invalid, d.Invalid)
				assert.Equal(t, tc.tooBig, d.TooBig)
				assert.True(t, bytes.Equal(tc.want, d.Data) && (tc.want == nil) == (d.Data == nil), "decoded %d bytes", len(d.Data))
				checkDigests(t, sp.Inline[0])
				checkDigests(t, d)
				assert.Equal(t, sha256.Sum256([]byte(body)), sp.SHA256)
				if len(tc.data) <= opt.KeepRaw {
					assert.Equal(t, body, string(sp.Fill(func(d *InlineData) []byte { return d.Raw })), "the body again, byte for byte")
				} else {
					assert.Nil(t, d.Raw)
				}
				assert.Equal(t, strings.Replace(body, tc.data, `"?"`, 1), string(sp.Fill(func(d *InlineData) []byte {
					if d.Index == 0 {
						return d.Raw
					}
					return []byte(`"?"`)
				})))
			}
		})
	}
}

// wrap puts sep after every n characters of s but the last.
func wrap(s, sep string, n int) string {
	var w strings.Builder
	for len(s) > n {
		w.WriteString(s[:n] + sep)
		s = s[n:]
	}
	return w.String() + s
}

// checkDigests: the digests computed while decoding are those of the
// decoded bytes, and set exactly when there are some.
func checkDigests(t *testing.T, d *InlineData) {
	t.Helper()
	if d.Data == nil {
		assert.False(t, d.Hashed)
		return
	}
	require.True(t, d.Hashed)
	assert.Equal(t, sha1.Sum(d.Data), d.SHA1)
	assert.Equal(t, sha256.Sum256(d.Data), d.SHA256)
}

func TestSpoolInlineBinary(t *testing.T) {
	body := "{\n  \"resourceType\": \"Binary\",\n  \"contentType\": \"application/pdf\",\n  \"data\": \"JVBERi0=\"\n}\n"
	for _, sp := range spoolBoth(t, body, SpoolOptions{MaxDecoded: 100, SizeHint: int64(len(body))}) {
		require.Len(t, sp.Inline, 1)
		assert.Equal(t, -1, sp.Inline[0].Index)
		assert.Equal(t, []byte("%PDF-"), sp.Inline[0].Data)
		assert.Equal(t, strings.Replace(body, `"JVBERi0="`, `""`, 1), string(sp.Fill(func(*InlineData) []byte { return []byte(`""`) })))
	}
}

func TestSpoolInlineRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		dup        bool
	}{
		{"truncated", `{"resourceType":"DiagnosticReport",`, false},
		{"truncated in data", `{"presentedForm":[{"data":"QQ==`, false},
		{"trailing", `{"a":1} {}`, false},
		{"control character", "{\"presentedForm\":[{\"data\":\"QQ\n==\"}]}", false},
		{"bad escape", `{"presentedForm":[{"data":"QQ\x=="}]}`, false},
		{"missing colon", `{"a" 1}`, false},
		{"duplicate", `{"status":"final","stat\u0075s":"x"}`, true},
		{"duplicate nested", `{"presentedForm":[{"data":"QQ==","data":"QQ=="}]}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := SpoolInline(strings.NewReader(tc.body), SpoolOptions{Array: "presentedForm", MaxDecoded: 10})
			require.Error(t, err)
			var fe *Error
			assert.Equal(t, tc.dup, errors.As(err, &fe), "%v", err)
			assert.Equal(t, !tc.dup, errors.Is(err, ErrSyntax), "%v", err)
		})
	}
}

func TestSpoolInlineEmpty(t *testing.T) {
	for _, body := range []string{"", " \n"} {
		_, err := SpoolInline(strings.NewReader(body), SpoolOptions{})
		assert.ErrorIs(t, err, ErrEmpty)
	}
}

// BenchmarkSpoolInline2MB reads a report carrying a 2 MiB PDF, the body's
// own SHA-256 included (a create without Idempotency-Key).
func BenchmarkSpoolInline2MB(b *testing.B) { benchSpool(b, false, false, false) }

// BenchmarkSpoolInline2MBHashed is BenchmarkSpoolInline2MB with the
// value's SHA-1 and SHA-256, as a report POST asks for them: past its
// first 64 KiB they are computed beside the decoding (valueHasher), so
// ns/op shows the wall-clock time a request waits, which a second core
// shortens.
func BenchmarkSpoolInline2MBHashed(b *testing.B) { benchSpool(b, true, false, false) }

// BenchmarkSpoolInline2MBKeyed is BenchmarkSpoolInline2MBHashed without
// the body's SHA-256, as a report POST with an Idempotency-Key reads its
// body: the decoding is then the shorter of the two paths, and the
// request waits for the values' digests.
func BenchmarkSpoolInline2MBKeyed(b *testing.B) { benchSpool(b, true, false, true) }

// BenchmarkSpoolInline2MBWrapped is BenchmarkSpoolInline2MBHashed with the
// base64 broken into MIME lines (an escaped CRLF every 76 characters), as
// some encoders send it: decoded in pieces of 57 bytes, which must not
// cost a handover each.
func BenchmarkSpoolInline2MBWrapped(b *testing.B) { benchSpool(b, true, true, false) }

func benchSpool(b *testing.B, hashValues, wrapped, skipHash bool) {
	data := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("%PDF-1.4 x"), 2<<20/10))
	if wrapped {
		data = wrap(data, `\r\n`, 76)
	}
	body := []byte(`{"resourceType":"DiagnosticReport","presentedForm":[{"contentType":"application/pdf","data":"` + data + `"}]}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		sp, err := SpoolInline(bytes.NewReader(body), SpoolOptions{Array: "presentedForm", MaxDecoded: 4 << 20, SizeHint: int64(len(body)), HashValues: hashValues, SkipHash: skipHash})
		if err != nil || sp.Inline[0].Hashed != hashValues {
			b.Fatal(err)
		}
	}
}

// TestSpoolHasherStops: a body that ends in the middle of a value hashed
// aside leaves no goroutine behind.
func TestSpoolHasherStops(t *testing.T) {
	data := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("%PDF-1.4 x"), 30_000))
	body := `{"resourceType":"DiagnosticReport","presentedForm":[{"data":"` + data[:len(data)/2]
	before := runtime.NumGoroutine()
	for range 20 {
		_, err := SpoolInline(strings.NewReader(body), SpoolOptions{Array: "presentedForm", MaxDecoded: 1 << 20, SizeHint: -1, HashValues: true})
		require.ErrorIs(t, err, ErrSyntax)
	}
	// Not assert.Eventually: its own goroutine would be counted.
	for deadline := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > before && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), before)
}

// FuzzSpoolInline: no input panics; valid JSON is never a syntax error,
// and with every value kept raw, the holes filled give the body back.
func FuzzSpoolInline(f *testing.F) {
	for _, s := range []string{
		`{"resourceType":"DiagnosticReport","presentedForm":[{"contentType":"application/pdf","data":"JVBERi0="}]}`,
		`{"presentedForm":[{"data":"QQ\/=\u0041"},{"data":" QUFB "},7,[]]}`,
		`{"data":"QQ=="}`, `[]`, `"x"`, `{"a":{"b":[1,2,{"c":null}]}}`,
		`{"data":"QUJD\r\nREVG\nR0hJ SktM\u000aTU5P"}`, `{"data":"Pz8\/"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, array := range []string{"presentedForm", ""} {
			sp, err := SpoolInline(bytes.NewReader(body), SpoolOptions{Array: array, MaxDecoded: 64, KeepRaw: 1 << 20, SizeHint: int64(len(body)), HashValues: true})
			var fe *Error
			if json.Valid(body) {
				if err != nil && !errors.As(err, &fe) {
					t.Fatalf("valid JSON refused: %v", err)
				}
			}
			if err != nil {
				continue
			}
			for _, d := range sp.Inline {
				checkDigests(t, d)
			}
			checkDecoded(t, body, array, sp.Inline, 64)
			if got := sp.Fill(func(d *InlineData) []byte { return d.Raw }); !bytes.Equal(got, body) {
				t.Fatalf("filled %q, want %q", got, body)
			}
		}
	})
}

// checkDecoded compares what SpoolInline decoded with a plain reading of
// the same values: encoding/json's string, whitespace removed, then
// encoding/base64. Values that may have stopped at maxDecoded bytes are
// left out, as the order of "too big" and "not base64" is not the
// reference's to say.
func checkDecoded(t *testing.T, body []byte, array string, got []*InlineData, maxDecoded int) {
	t.Helper()
	var root map[string]json.RawMessage
	if json.Unmarshal(body, &root) != nil {
		return
	}
	values := map[int]json.RawMessage{}
	if array == "" {
		values[-1] = root["data"]
	} else {
		var elems []json.RawMessage
		_ = json.Unmarshal(root[array], &elems)
		for i, e := range elems {
			var m map[string]json.RawMessage
			if json.Unmarshal(e, &m) == nil {
				values[i] = m["data"]
			}
		}
	}
	for _, d := range got {
		var text string
		if json.Unmarshal(values[d.Index], &text) != nil {
			continue
		}
		text = strings.Map(func(r rune) rune {
			if strings.ContainsRune(" \t\n\r", r) {
				return -1
			}
			return r
		}, text)
		if len(text)/4*3 > maxDecoded {
			continue
		}
		want, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			assert.True(t, d.Invalid, "%q decoded, the reference refuses it: %v", text, err)
			continue
		}
		assert.False(t, d.Invalid || d.TooBig, "%q refused", text)
		assert.Equal(t, want, d.Data, "%q", text)
	}
}

// TestSpoolValueBuffersFit: a value's buffer is sized by the rest of the
// body while it is decoded; a larger value after it must not leave it
// holding room for that one (the bytes may be kept after the request).
func TestSpoolValueBuffersFit(t *testing.T) {
	small, large := bytes.Repeat([]byte("s"), 100<<10), bytes.Repeat([]byte("L"), 2<<20)
	body := []byte(`{"resourceType":"DiagnosticReport","presentedForm":[{"data":"` + base64.StdEncoding.EncodeToString(small) +
		`"},{"data":"` + base64.StdEncoding.EncodeToString(large) + `"}]}`)
	for _, hash := range []bool{false, true} {
		sp, err := SpoolInline(bytes.NewReader(body), SpoolOptions{Array: "presentedForm", MaxDecoded: 4 << 20, SizeHint: int64(len(body)), HashValues: hash})
		require.NoError(t, err)
		require.Len(t, sp.Inline, 2)
		for i, want := range [][]byte{small, large} {
			d := sp.Inline[i].Data
			assert.Equal(t, want, d)
			assert.LessOrEqual(t, cap(d), len(d)+64<<10, "value %d: a buffer of %d bytes for %d", i, cap(d), len(d))
		}
		if hash {
			sum := sha256.Sum256(small)
			assert.Equal(t, sum, sp.Inline[0].SHA256)
		}
	}
}
