package mapping

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
)

// twoPass is fhirSafe as it was defined before safeText: the reference
// safeText must agree with.
func twoPass(s string) bool { return utf8.ValidString(s) && !hasControl(s) }

func TestFhirSafeAgreesWithTwoPasses(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("Computed Tomography ", 3)
	cases := []string{
		"", "a", "Smith", "Dr A. Smith, 12 Main St", long,
		"tab\there", "line\nfeed", "carriage\rreturn",
		"\x00", "abcdefg\x00", "abcdefgh\x1f", "\x7fabcdefgh", " !~\x7f~! ",
		"Zoë Müller-Łukasiewicz", long + "é", "日本語のテキスト", "\uFFFD",
		"abcdefgh\xff", "abcdefgh\xc3", "abcdefgh\xed\xa0\x80", "\xe2\x82",
		long + "\x01", "é\x01", "abcdefghé\x1b", "\u0085 next line",
	}
	for _, s := range cases {
		assert.Equal(t, twoPass(s), fhirSafe(s), "%q", s)
		assert.Equal(t, twoPass(s), fhirSafeBytes([]byte(s)), "%q as bytes", s)
	}
	// Every byte value at every position of an eight-byte word and its tail.
	for pos := range 11 {
		for c := range 256 {
			b := []byte("ABCDEFGHIJK")
			b[pos] = byte(c)
			assert.Equal(t, twoPass(string(b)), fhirSafe(string(b)), "%q", b)
		}
	}
}

func FuzzFhirSafe(f *testing.F) {
	for _, s := range []string{"", "Smith", "abcdefgh\x00", "Zoë", "\xff\xfe", "tab\tand\nlines"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if want := twoPass(s); fhirSafe(s) != want || fhirSafeBytes([]byte(s)) != want {
			t.Fatalf("fhirSafe(%q) disagrees with the two-pass check (%v)", s, want)
		}
	})
}

func BenchmarkFhirSafe(b *testing.B) {
	a := loadCase(b, "typical_ct")
	for b.Loop() {
		if !appointmentSafe(&a) {
			b.Fatal("typical_ct unsafe")
		}
	}
}
