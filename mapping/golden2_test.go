package mapping

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// Golden pairs of the document, comment and report mappings live in
// testdata/<dir>/<case><inSuffix> and testdata/<dir>/<case>.fhir.json,
// next to (not among) the appointment pairs, and are refreshed by the same
// -update flag.

// runGolden maps each input of dir with build and compares the result,
// pretty-printed, with its golden file; check then reads the golden file
// (what clients see) back.
func runGolden(t *testing.T, dir, inSuffix string, minCases int, build func(t *testing.T, in []byte) any, check func(t *testing.T, in, golden []byte)) {
	t.Helper()
	inputs, err := filepath.Glob(filepath.Join("testdata", dir, "*"+inSuffix))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(inputs), minCases, "golden cases went missing from testdata/%s", dir)
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), inSuffix)
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			require.NoError(t, err)
			got := prettyJSON(t, build(t, raw))
			goldenPath := filepath.Join("testdata", dir, name+".fhir.json")
			if *update {
				require.NoError(t, os.WriteFile(goldenPath, got, 0o644))
			}
			want, err := os.ReadFile(goldenPath)
			require.NoError(t, err, "run go test ./mapping -update to create it")
			if d := lineDiff(want, got); d != "" {
				t.Errorf("%s differs from the mapping (run go test ./mapping -update if the change is intended):\n%s", goldenPath, d)
			}
			check(t, raw, want)
		})
	}
}

// prettyJSON is the golden form: indented, HTML left alone, a trailing
// newline. A json.RawMessage is re-indented.
func prettyJSON(t testing.TB, v any) []byte {
	t.Helper()
	if raw, ok := v.(json.RawMessage); ok {
		var buf bytes.Buffer
		require.NoError(t, json.Indent(&buf, raw, "", "  "))
		buf.WriteByte('\n')
		return buf.Bytes()
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(v))
	return buf.Bytes()
}

// requireValidJSON checks one resource, given as JSON or as a value, with
// the strict R4 validator.
func requireValidJSON(t testing.TB, v any) {
	t.Helper()
	b, ok := v.([]byte)
	if raw, isRaw := v.(json.RawMessage); isRaw {
		b, ok = raw, true
	}
	if !ok {
		var err error
		b, err = json.Marshal(v)
		require.NoError(t, err)
	}
	fhirtest.RequireValidR4(t, b)
}

// originals reads the ExtOriginal extensions: QUBS field name to the exact
// value.
func originals(t testing.TB, exts []fhir.Extension) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, e := range exts {
		if e.Url != ExtOriginal {
			continue
		}
		var field, value string
		for _, s := range e.Extension {
			switch s.Url {
			case "field":
				field = val(s.ValueString)
			case "value":
				b, err := base64.StdEncoding.DecodeString(val(s.ValueBase64Binary))
				require.NoError(t, err)
				value = string(b)
			}
		}
		require.NotEmpty(t, field)
		_, dup := m[field]
		require.False(t, dup, "field %s kept twice", field)
		m[field] = value
	}
	return m
}

// restored is the QUBS value of a field shown as shown: the original when
// one was kept, after checking shown is its FHIR-safe form.
func restored(t testing.TB, orig map[string]string, field string, shown *string) string {
	t.Helper()
	o, ok := orig[field]
	if !ok {
		if shown != nil {
			assert.True(t, fhirSafe(*shown), "field %s shown unsafe", field)
		}
		return val(shown)
	}
	delete(orig, field)
	if shown != nil {
		assert.Equal(t, safeString(o), *shown, "field %s", field)
	}
	return o
}

// restoredTime is a QUBS date-time shown as shown, or kept as an original.
func restoredTime(t testing.TB, orig map[string]string, field string, shown *string) *time.Time {
	t.Helper()
	s := restored(t, orig, field, shown)
	if s == "" {
		return nil
	}
	tm, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err, "field %s", field)
	return &tm
}

// recoverUser reads a QUBS user back from a Reference made by
// userReference, checking its display and identifier on the way.
func recoverUser(t testing.TB, orig map[string]string, field string, r *fhir.Reference) *qubs.UserSummary {
	t.Helper()
	if r == nil {
		return nil
	}
	require.Len(t, r.Extension, 1)
	require.Equal(t, ExtUser, r.Extension[0].Url)
	u := &qubs.UserSummary{}
	for _, s := range r.Extension[0].Extension {
		v := restored(t, orig, field+"."+s.Url, s.ValueString)
		switch s.Url {
		case "username":
			u.Username = v
		case "firstName":
			u.FirstName = v
		case "initials":
			u.Initials = v
		case "lastName":
			u.LastName = v
		case "role":
			u.Role = v
		default:
			t.Fatalf("unknown sub-extension %q", s.Url)
		}
	}
	if u.Username != "" {
		require.NotNil(t, r.Identifier)
		assert.Equal(t, SystemUsername, val(r.Identifier.System))
	}
	assert.Equal(t, "Practitioner", val(r.Type))
	assert.Nil(t, r.Reference, "QUBS users have no resource")
	return u
}

// sameJSON compares two values by their JSON, which is how QUBS sends
// them: time.Time values of the same instant and zone compare equal.
func sameJSON(t testing.TB, want, got any, msg string) {
	t.Helper()
	w, err := json.Marshal(want)
	require.NoError(t, err)
	g, err := json.Marshal(got)
	require.NoError(t, err)
	assert.JSONEq(t, string(w), string(g), msg)
}
