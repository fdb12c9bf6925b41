package fhir

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"sync"

	simdbase64 "github.com/segmentio/asm/base64"
)

// InlineData is one base64Binary value taken out of a resource while its
// JSON was read (SpoolInline): the decoded bytes, or why there are none.
type InlineData struct {
	// Index is the element's index in the array named by
	// SpoolOptions.Array, -1 for a top-level data member.
	Index int
	// Data is the decoded value; nil when Invalid or TooBig. It is a
	// buffer of its own, which outlives the request: a stored report's
	// delivery may take it (delivery.Held), so it must never come from a
	// pool or be written to afterwards.
	Data []byte
	// Invalid is true when the value is not base64 (R4 base64Binary:
	// whitespace between characters allowed, length a multiple of 4).
	Invalid bool
	// TooBig is true when the decoded value would exceed
	// SpoolOptions.MaxDecoded; decoding stopped there.
	TooBig bool
	// Raw is the value's JSON string token as sent, quotes included, when
	// it is at most SpoolOptions.KeepRaw bytes; nil otherwise.
	Raw []byte
	// SHA1 and SHA256 are Data's digests, computed as it was decoded
	// (SpoolOptions.HashValues), while its bytes were in the CPU's
	// cache, rather than in two more passes over megabytes; Hashed says
	// they are set.
	SHA1   [sha1.Size]byte
	SHA256 [sha256.Size]byte
	Hashed bool
}

// SpoolOptions says which values SpoolInline takes out.
type SpoolOptions struct {
	// Array names the top-level array whose elements' "data" members are
	// taken out ("presentedForm"); "" takes the top-level "data" member
	// (Binary).
	Array string
	// MaxDecoded bounds one decoded value.
	MaxDecoded int
	// KeepRaw bounds the raw token kept in InlineData.Raw.
	KeepRaw int
	// SkipHash leaves Spooled.SHA256 zero, for a caller that does not
	// need the body's digest (2 ms of a 2.8 MB body).
	SkipHash bool
	// HashValues computes InlineData.SHA1 and SHA256 of each decoded value.
	HashValues bool
	// SizeHint is the body's length when known (Content-Length), -1 when
	// not: a large value is then decoded into one buffer of about its
	// final size rather than one grown by doubling.
	SizeHint int64
}

// Spooled is a resource read by SpoolInline: its JSON with the taken-out
// values left as holes, and those values decoded.
type Spooled struct {
	skeleton []byte
	holes    []int // offsets in skeleton, one per Inline value
	// Inline are the values taken out, in document order.
	Inline []*InlineData
	// SHA256 is the digest of the body as read, byte for byte (zero with
	// SpoolOptions.SkipHash).
	SHA256 [sha256.Size]byte
}

// Fill returns the resource's JSON with each hole replaced by what fill
// returns for its value (a JSON string token).
func (s *Spooled) Fill(fill func(*InlineData) []byte) []byte {
	n := len(s.skeleton)
	vals := make([][]byte, len(s.holes))
	for i, d := range s.Inline {
		vals[i] = fill(d)
		n += len(vals[i])
	}
	out := make([]byte, 0, n)
	prev := 0
	for i, off := range s.holes {
		out = append(out, s.skeleton[prev:off]...)
		out = append(out, vals[i]...)
		prev = off
	}
	return append(out, s.skeleton[prev:]...)
}

// Errors of SpoolInline for a body that is not one JSON value.
var (
	ErrSyntax = errors.New("the body is not valid JSON")
	ErrEmpty  = errors.New("the body is empty")
)

// maxDepth bounds nesting, as the validator does (maxNesting), so a
// hostile body cannot exhaust the stack.
const maxDepth = 256

// SyntaxError says where a body stops being JSON, and never what it held
// there: the bytes can be PHI. It matches ErrSyntax with errors.Is.
type SyntaxError struct {
	// Offset is the byte offset of the first byte that does not fit;
	// Line and Column (1-based, Column in bytes) are the same place.
	Offset       int64
	Line, Column int
	// AtEnd is set when the body ended in the middle of a value.
	AtEnd bool
}

func (e *SyntaxError) Error() string {
	if e.AtEnd {
		return fmt.Sprintf("the body ends in the middle of a JSON value (line %d, column %d, byte offset %d)", e.Line, e.Column, e.Offset)
	}
	return fmt.Sprintf("the body is not valid JSON at line %d, column %d (byte offset %d)", e.Line, e.Column, e.Offset)
}

// Is makes a *SyntaxError match ErrSyntax.
func (e *SyntaxError) Is(target error) bool { return target == ErrSyntax }

// syntaxError locates the spooler's current position.
func (p *spooler) syntaxError() *SyntaxError {
	pos := min(p.pos, p.end)
	e := &SyntaxError{Offset: p.consumed + int64(pos), AtEnd: pos >= p.end && p.err == io.EOF}
	seen := p.buf[:pos]
	e.Line = p.lines + bytes.Count(seen, []byte{'\n'}) + 1
	lineStart := p.lineStart
	if i := bytes.LastIndexByte(seen, '\n'); i >= 0 {
		lineStart = p.consumed + int64(i) + 1
	}
	e.Column = int(e.Offset-lineStart) + 1
	return e
}

// SpoolInline reads one JSON resource from r exactly once, copying it
// except the base64 values opt names, which it decodes as it reads them:
// a 2 MiB PDF in a report costs its decoded bytes once, never its base64
// text, a parse tree or a second copy. It refuses a JSON object with the
// same member twice (after unescaping) with a 400 *Error, as strict
// parsers disagree on which one counts. A body that is not JSON is
// ErrSyntax; a failure of r is returned wrapped (an *http.MaxBytesError
// stays visible to errors.As).
func SpoolInline(r io.Reader, opt SpoolOptions) (*Spooled, error) {
	var h hash.Hash
	if !opt.SkipHash {
		h = sha256.New()
	}
	p := &spooler{r: r, h: h, buf: make([]byte, 32<<10), opt: opt, elemIndex: -1}
	defer func() {
		if p.hashing != nil {
			p.hashing.close()
		}
	}()
	p.ws()
	if !p.more() && p.err == io.EOF {
		return nil, ErrEmpty
	}
	if err := p.value(roleRoot, 0); err != nil {
		if err == ErrSyntax {
			return nil, p.syntaxError()
		}
		return nil, err
	}
	p.ws()
	if p.more() {
		if p.err != nil && p.err != io.EOF {
			return nil, p.readErr()
		}
		return nil, p.syntaxError()
	}
	if p.err != io.EOF {
		return nil, p.readErr()
	}
	sp := &Spooled{skeleton: p.out, holes: p.holes, Inline: p.inline}
	if h != nil {
		h.Sum(sp.SHA256[:0])
	}
	return sp, nil
}

// roles of a value within the resource, for what SpoolInline takes out.
const (
	roleIgnore = iota // nothing to take out below
	roleRoot          // the resource object
	roleArray         // the array opt.Array
	roleElem          // one of its elements
	roleSpool         // a value to take out
)

type spooler struct {
	r        io.Reader
	h        hash.Hash
	buf      []byte
	pos, end int
	err      error // sticky error of r; io.EOF at the end
	consumed int64 // bytes of the body before buf[0]
	// lines counts the newlines before buf[0], and lineStart is the
	// offset where the last of those lines began: where a syntax error
	// is, without keeping what was read.
	lines     int
	lineStart int64
	opt       SpoolOptions
	// elemIndex is the index of the current element of opt.Array.
	elemIndex int
	enc       []byte // base64 text not decoded yet (b64sink.push)
	out       []byte
	holes     []int
	inline    []*InlineData
	// hashing is the hasher of the value being decoded, stopped when
	// SpoolInline returns, so that a body that ends in the middle of a
	// value leaves no goroutine behind.
	hashing *valueHasher
}

func (p *spooler) readErr() error {
	return fmt.Errorf("reading the body: %w", p.err)
}

// more makes at least one byte available, reporting false at the end or
// on a read error (p.err).
func (p *spooler) more() bool {
	if p.pos < p.end {
		return true
	}
	for p.err == nil {
		// Count first: it is vectorised, LastIndexByte is not, and the
		// base64 of an artifact is megabytes without a newline.
		done := p.buf[:p.end]
		if n := bytes.Count(done, []byte{'\n'}); n > 0 {
			p.lines += n
			p.lineStart = p.consumed + int64(bytes.LastIndexByte(done, '\n')) + 1
		}
		p.consumed += int64(p.end)
		n, err := p.r.Read(p.buf)
		if p.h != nil {
			p.h.Write(p.buf[:n])
		}
		p.pos, p.end, p.err = 0, n, err
		if n > 0 {
			return true
		}
	}
	return false
}

func (p *spooler) fail() error {
	if p.err != nil && p.err != io.EOF {
		return p.readErr()
	}
	return ErrSyntax
}

// ws copies whitespace.
func (p *spooler) ws() {
	for p.more() {
		switch c := p.buf[p.pos]; c {
		case ' ', '\t', '\n', '\r':
			p.out = append(p.out, c)
			p.pos++
		default:
			return
		}
	}
}

func (p *spooler) value(role, depth int) error {
	if depth > maxDepth || !p.more() {
		return p.fail()
	}
	switch c := p.buf[p.pos]; {
	case c == '{':
		return p.object(role, depth)
	case c == '[':
		return p.array(role, depth)
	case c == '"':
		if role == roleSpool {
			return p.spool()
		}
		_, err := p.str(false)
		return err
	default:
		// A number, true, false or null: copied up to the next
		// delimiter; the validator reads it.
		n := 0
		for p.more() {
			c := p.buf[p.pos]
			if c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r' {
				break
			}
			if c == '{' || c == '[' || c == '"' || c == ':' {
				return ErrSyntax
			}
			p.out = append(p.out, c)
			p.pos++
			n++
		}
		if n == 0 {
			return p.fail()
		}
		return nil
	}
}

func (p *spooler) object(role, depth int) error {
	p.out = append(p.out, '{')
	p.pos++
	p.ws()
	if !p.more() {
		return p.fail()
	}
	if p.buf[p.pos] == '}' {
		p.out = append(p.out, '}')
		p.pos++
		return nil
	}
	var seen map[string]struct{}
	for {
		if !p.more() || p.buf[p.pos] != '"' {
			return p.fail()
		}
		key, err := p.str(true)
		if err != nil {
			return err
		}
		if seen == nil {
			seen = make(map[string]struct{}, 8)
		}
		if _, dup := seen[key]; dup {
			return Errorf(http.StatusBadRequest, "structure", "a JSON object has the member %q twice", key)
		}
		seen[key] = struct{}{}
		p.ws()
		if !p.more() || p.buf[p.pos] != ':' {
			return p.fail()
		}
		p.out = append(p.out, ':')
		p.pos++
		p.ws()
		child := roleIgnore
		switch {
		case role == roleRoot && p.opt.Array != "" && key == p.opt.Array:
			child = roleArray
		case role == roleRoot && p.opt.Array == "" && key == "data", role == roleElem && key == "data":
			child = roleSpool
		}
		if err := p.value(child, depth+1); err != nil {
			return err
		}
		if closed, err := p.separator('}'); closed || err != nil {
			return err
		}
	}
}

// separator copies what follows a member or element: a comma (and the
// white space after it, up to the next value), or the closing bracket,
// which ends the object or array (closed).
func (p *spooler) separator(closing byte) (closed bool, err error) {
	p.ws()
	if !p.more() {
		return false, p.fail()
	}
	switch p.buf[p.pos] {
	case ',':
		p.out = append(p.out, ',')
		p.pos++
		p.ws()
		if !p.more() {
			return false, p.fail()
		}
		return false, nil
	case closing:
		p.out = append(p.out, closing)
		p.pos++
		return true, nil
	}
	return false, ErrSyntax
}

func (p *spooler) array(role, depth int) error {
	p.out = append(p.out, '[')
	p.pos++
	p.ws()
	if !p.more() {
		return p.fail()
	}
	if p.buf[p.pos] == ']' {
		p.out = append(p.out, ']')
		p.pos++
		return nil
	}
	child := roleIgnore
	if role == roleArray {
		child = roleElem
	}
	for i := 0; ; i++ {
		r := child
		if r == roleElem && p.buf[p.pos] != '{' {
			r = roleIgnore
		}
		if role == roleArray {
			p.elemIndex = i
		}
		if err := p.value(r, depth+1); err != nil {
			return err
		}
		if closed, err := p.separator(']'); closed || err != nil {
			return err
		}
	}
}

// str copies a string token; decode returns its value (for member names).
func (p *spooler) str(decode bool) (string, error) {
	start := len(p.out)
	p.out = append(p.out, '"')
	p.pos++
	escaped := false
	for {
		if !p.more() {
			return "", p.fail()
		}
		seg := p.buf[p.pos:p.end]
		i := 0
		for i < len(seg) && seg[i] != '"' && seg[i] != '\\' && seg[i] >= 0x20 {
			i++
		}
		p.out = append(p.out, seg[:i]...)
		p.pos += i
		if i == len(seg) {
			continue
		}
		c := seg[i]
		if c < 0x20 {
			return "", ErrSyntax
		}
		p.out = append(p.out, c)
		p.pos++
		if c == '"' {
			break
		}
		escaped = true
		if !p.more() {
			return "", p.fail()
		}
		p.out = append(p.out, p.buf[p.pos])
		p.pos++
	}
	if !decode {
		return "", nil
	}
	raw := p.out[start:]
	if !escaped {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", ErrSyntax
	}
	return s, nil
}

// Byte classes inside a base64 string value.
const (
	clsOther = iota // valid JSON, not base64
	clsB64
	clsSpace
	clsControl // invalid JSON
)

var b64class = func() (t [256]byte) {
	for c := 0; c < 0x20; c++ {
		t[c] = clsControl
	}
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=" {
		t[c] = clsB64
	}
	t[' '] = clsSpace
	return t
}()

// spool takes out a base64 string value, decoding it as it is read; a
// hole in the skeleton marks its place.
func (p *spooler) spool() error {
	d := &InlineData{Index: p.elemIndex}
	p.holes = append(p.holes, len(p.out))
	p.inline = append(p.inline, d)
	b := &b64sink{p: p, d: d, start: p.consumed + int64(p.pos)}
	if p.opt.HashValues {
		b.h = &valueHasher{h1: sha1.New(), h256: sha256.New()}
		p.hashing = b.h
	}
	p.enc = p.enc[:0]
	keep := p.opt.KeepRaw > 0
	raw := func(seg []byte) {
		if !keep {
			return
		}
		if len(d.Raw)+len(seg) > p.opt.KeepRaw {
			keep, d.Raw = false, nil
			return
		}
		d.Raw = append(d.Raw, seg...)
	}
	raw([]byte{'"'})
	p.pos++
	// quote is where in p.buf the next '"' is (p.end when none is
	// buffered), found once per read: a value wrapped every 76 characters
	// has an escape per line, and looking for the quote again after each
	// would scan the buffer once a line.
	quote, quoteOf := 0, int64(-1)
	for {
		if !p.more() {
			return p.fail()
		}
		if quoteOf != p.consumed || quote < p.pos {
			quoteOf, quote = p.consumed, p.end
			if q := bytes.IndexByte(p.buf[p.pos:p.end], '"'); q >= 0 {
				quote = p.pos + q
			}
		}
		// The text up to the next escape, the quote or the end of what is
		// buffered: in the common case the whole value as buffered.
		seg := p.buf[p.pos:quote]
		if e := bytes.IndexByte(seg, '\\'); e >= 0 {
			seg = seg[:e]
		}
		if err := b.text(seg); err != nil {
			return err
		}
		raw(seg)
		p.pos += len(seg)
		switch {
		case p.pos == p.end:
			continue
		case p.buf[p.pos] == '"':
			raw([]byte{'"'})
			p.pos++
			b.finish()
			return nil
		}
		// An escape, perhaps across reads.
		var esc [6]byte
		n, err := p.escape(esc[:])
		if err != nil {
			return err
		}
		raw(esc[:n])
		b.escaped(esc[:n])
	}
}

// escape reads one escape sequence into esc and returns its length.
func (p *spooler) escape(esc []byte) (int, error) {
	n := 2
	if p.buf[p.pos+0] != '\\' {
		return 0, ErrSyntax
	}
	for k := 0; k < n; k++ {
		if !p.more() {
			return 0, p.fail()
		}
		esc[k] = p.buf[p.pos]
		p.pos++
		if k == 1 {
			switch esc[1] {
			case 'u':
				n = 6
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			default:
				return 0, ErrSyntax
			}
		}
		if k >= 2 && unhex(esc[k]) < 0 {
			return 0, ErrSyntax
		}
	}
	return n, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// b64sink decodes one value's base64 text in chunks.
type b64sink struct {
	p      *spooler
	d      *InlineData
	h      *valueHasher // SHA-1 and SHA-256 of what is decoded, or nil
	start  int64        // the value's offset in the body
	padded bool         // a chunk ended in padding: nothing may follow
	stop   bool         // Invalid or TooBig: the rest is only scanned
}

// text takes base64 text without escapes or quotes. Plain base64 is
// found with a few vectorised scans and handed on whole; the decoder
// refuses whatever else is not base64 (a control character included:
// 400 either way). Spaces, which base64Binary allows between
// characters, and raw line breaks, which the decoder would skip but
// JSON forbids, take the byte-by-byte path.
func (b *b64sink) text(seg []byte) error {
	if bytes.IndexByte(seg, ' ') < 0 && bytes.IndexByte(seg, '\n') < 0 && bytes.IndexByte(seg, '\r') < 0 {
		b.push(seg)
		return nil
	}
	for i := 0; i < len(seg); {
		switch b64class[seg[i]] {
		case clsB64:
			j := i + 1
			for j < len(seg) && b64class[seg[j]] == clsB64 {
				j++
			}
			b.push(seg[i:j])
			i = j
		case clsSpace:
			i++
		case clsControl:
			return ErrSyntax
		default:
			b.d.Invalid = true
			i++
		}
	}
	return nil
}

// Base64 text in short pieces (between the escaped line breaks of text
// wrapped every 76 characters, say) is gathered into stageSize bytes
// before it is decoded: decoding and hashing each piece by itself made
// such a 2 MiB PDF cost ten times a plain one (BenchmarkSpoolInline2MBWrapped).
// Pieces of stageDirect bytes or more are decoded where they lie.
const (
	stageSize   = 16 << 10
	stageDirect = 4 << 10
)

// push takes base64 text. Short pieces are gathered in p.enc, which is
// decoded when the next would overflow it or a long piece comes; a long
// piece first completes the quad the gathered text ends short of, and is
// then decoded where it lies. What is short of a quad stays in p.enc.
func (b *b64sink) push(chars []byte) {
	if b.stop || b.d.Invalid {
		return
	}
	enc := b.p.enc
	long := len(chars) >= stageDirect
	if long || len(enc)+len(chars) > stageSize {
		if long {
			n := min(-len(enc)&3, len(chars))
			enc = append(enc, chars[:n]...)
			chars = chars[n:]
		}
		whole := len(enc) / 4 * 4
		b.decode(enc[:whole])
		enc = enc[:copy(enc, enc[whole:])]
	}
	if long {
		n := len(chars) / 4 * 4
		b.decode(chars[:n])
		chars = chars[n:]
	}
	if cap(enc) < stageSize {
		enc = append(make([]byte, 0, stageSize), enc...)
	}
	b.p.enc = append(enc, chars...)
}

// escaped handles an escape sequence inside the value: \/ is a slash,
// \n, \r and \t whitespace (both allowed in base64Binary), \u00XX the
// character it names; anything else is not base64.
func (b *b64sink) escaped(esc []byte) {
	c := esc[1]
	if c == 'u' {
		v := unhex(esc[2])<<12 | unhex(esc[3])<<8 | unhex(esc[4])<<4 | unhex(esc[5])
		if v >= 0x80 {
			b.d.Invalid = true
			return
		}
		switch c = byte(v); c {
		case ' ', '\t', '\n', '\r':
			return
		}
		if b64class[c] != clsB64 {
			b.d.Invalid = true
			return
		}
		b.push([]byte{c})
		return
	}
	switch c {
	case '/':
		b.push([]byte{'/'})
	case 'n', 'r', 't':
	default:
		b.d.Invalid = true
	}
}

// decode decodes whole quads of base64 text onto the value.
func (b *b64sink) decode(src []byte) {
	d := b.d
	if len(src) == 0 || d.Invalid || b.stop {
		return
	}
	if b.padded { // padding ended the value already
		d.Invalid = true
		return
	}
	max := len(src) / 4 * 3
	if len(d.Data)+max-2 > b.p.opt.MaxDecoded {
		d.TooBig, b.stop, d.Data = true, true, nil
		return
	}
	b.grow(max)
	// segmentio's decoder takes the same alphabet and padding as
	// encoding/base64 and refuses exactly what it refuses (its error's
	// offset can differ; only whether there is one matters here). It
	// falls back to the standard library's code on CPUs without AVX2 or
	// NEON and on pieces under 45 bytes, and decodes a 2 MiB PDF in
	// 0.25 ms, not 2.5 (docs/performance.md).
	m, err := simdbase64.StdEncoding.Decode(d.Data[len(d.Data):len(d.Data)+max], src)
	if err != nil {
		d.Invalid = true
		return
	}
	d.Data = d.Data[:len(d.Data)+m]
	if b.h != nil {
		b.h.add(d.Data)
	}
	if len(d.Data) > b.p.opt.MaxDecoded {
		d.TooBig, b.stop, d.Data = true, true, nil
		return
	}
	b.padded = src[len(src)-1] == '='
}

// grow makes room for n more decoded bytes. Past 64 KiB, the rest of the
// body (by the size hint) bounds the value, so a 2 MiB artifact costs one
// buffer of about its size, not the doubling's two.
func (b *b64sink) grow(n int) {
	d := b.d
	need := len(d.Data) + n
	if need <= cap(d.Data) {
		return
	}
	c := max(2*cap(d.Data), need, 4<<10)
	if c > 64<<10 && b.p.opt.SizeHint > 0 {
		if est := int((b.p.opt.SizeHint-b.start)/4*3) + 3; est > need {
			c = est
		}
	}
	c = max(min(c, b.p.opt.MaxDecoded+3), need)
	nd := make([]byte, len(d.Data), c)
	copy(nd, d.Data)
	d.Data = nd
}

func (b *b64sink) finish() {
	if enc := b.p.enc; len(enc) > 0 {
		b.decode(enc[:len(enc)/4*4])
		if len(enc)%4 != 0 && !b.stop { // a length that is not a multiple of 4
			b.d.Invalid = true
		}
	}
	if b.d.Invalid || b.d.TooBig {
		if b.h != nil {
			b.h.close()
		}
		b.d.Data = nil
		return
	}
	if b.d.Data == nil {
		b.d.Data = []byte{}
	}
	if b.h != nil {
		b.h.sum(b.d) // the hasher is done with the buffer after this
	}
	// grow sized the buffer by the rest of the body, which a larger value
	// after this one fills (an image of 100 KiB before a PDF of 2 MiB):
	// keep only the value, which may outlive the request (delivery.Held).
	// A value that ends the body's large ones has little slack, no copy.
	if slack := cap(b.d.Data) - len(b.d.Data); slack > 64<<10 && slack > len(b.d.Data)/8 {
		b.d.Data = bytes.Clone(b.d.Data)
	}
}

// hashAside is how many bytes of a value are hashed where they are
// decoded; the rest is hashed by goroutines of their own, beside the
// decoding (a 2 MiB PDF's SHA-1 and SHA-256 take longer than its
// decoding), so that a second core shortens the request instead of
// idling. It is also the least those goroutines are handed at a time:
// base64 that is not one plain run (line breaks escaped every 76
// characters, spaces between quads) decodes in pieces of a few bytes,
// and a handover per piece would cost more than the hashing it moves.
const hashAside = 64 << 10

// valueHasher computes a value's SHA-1 and SHA-256 from its decoded
// bytes. What it has been handed must not change afterwards: the
// decoder only appends to the value, and a grown buffer is a copy (the
// old one stays as it was).
//
// Aside, each digest has a goroutine of its own. With one doing both, a
// report POST with an Idempotency-Key (which skips the body's own hash)
// waited for ~2 ms of hashing after ~0.6 ms of decoding a 2 MiB PDF; with
// two, the decoder's core takes one digest once it is done, and the read
// took 2.08 instead of 2.81 ms (BenchmarkSpoolInline2MBKeyed, medians of
// five interleaved runs, docs/performance.md).
type valueHasher struct {
	h1, h256 hash.Hash
	sent     int           // bytes of the value hashed or handed over
	aside    []chan []byte // one per digest, set once hashing moved aside
	done     sync.WaitGroup
}

// add hashes, or hands over, the bytes of data (the value decoded so
// far) that it has not had yet.
func (v *valueHasher) add(data []byte) {
	if v.aside != nil {
		if len(data)-v.sent >= hashAside {
			v.handOver(data[v.sent:])
			v.sent = len(data)
		}
		return
	}
	v.h1.Write(data[v.sent:])
	v.h256.Write(data[v.sent:])
	if v.sent = len(data); v.sent >= hashAside {
		for _, h := range []hash.Hash{v.h1, v.h256} {
			ch := make(chan []byte, 64)
			v.aside = append(v.aside, ch)
			v.done.Go(func() {
				for p := range ch {
					h.Write(p)
				}
			})
		}
	}
}

// handOver gives p to every digest's goroutine.
func (v *valueHasher) handOver(p []byte) {
	for _, ch := range v.aside {
		ch <- p
	}
}

// sum puts the digests of d's decoded bytes into d, once every byte is
// hashed.
func (v *valueHasher) sum(d *InlineData) {
	// Hashed where decoded, every byte is in the digests already; aside,
	// the last batch may not be handed over yet.
	if v.aside != nil && v.sent < len(d.Data) {
		v.handOver(d.Data[v.sent:])
	}
	v.close()
	v.h1.Sum(d.SHA1[:0])
	v.h256.Sum(d.SHA256[:0])
	d.Hashed = true
}

// close ends the goroutines, if any, and waits for them. Safe to call
// more than once.
func (v *valueHasher) close() {
	for _, ch := range v.aside {
		close(ch)
	}
	v.done.Wait()
	v.aside = nil
}
