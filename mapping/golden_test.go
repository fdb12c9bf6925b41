package mapping

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

var update = flag.Bool("update", false, "rewrite testdata/*.fhir.json from the current mapping")

// testZones is the configuration every golden case is mapped with, spelled
// as BRIDGE_SITE_TIMEZONES would be (spaces around ';' and '=' on purpose).
func testZones(t testing.TB) *Zones {
	t.Helper()
	z, err := NewZones("Australia/Sydney", "Perth Imaging = Australia/Perth ; Brisbane Central=Australia/Brisbane;")
	require.NoError(t, err)
	return z
}

// marshalGolden is the golden form of a worklist: pretty-printed, with a
// trailing newline.
func marshalGolden(t testing.TB, r resources) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(r))
	return buf.Bytes()
}

// TestGolden maps each testdata/<case>.qubs.json and compares the result
// with testdata/<case>.fhir.json. Each resource must pass strict R4
// validation and the appointment must be recoverable from the golden
// output alone.
func TestGolden(t *testing.T) {
	t.Parallel()
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.qubs.json"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(inputs), 10, "golden cases went missing")
	z := testZones(t)
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".qubs.json")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			require.NoError(t, err)
			var a qubs.Appointment
			require.NoError(t, json.Unmarshal(raw, &a))

			w, err := FromAppointment(&a, z)
			require.NoError(t, err)
			got := marshalGolden(t, resourcesOf(w))

			goldenPath := filepath.Join("testdata", name+".fhir.json")
			if *update {
				require.NoError(t, os.WriteFile(goldenPath, got, 0o644))
			}
			want, err := os.ReadFile(goldenPath)
			require.NoError(t, err, "run go test ./mapping -update to create it")
			if d := lineDiff(want, got); d != "" {
				t.Errorf("%s differs from the mapping (run go test ./mapping -update if the change is intended):\n%s", goldenPath, d)
			}

			// Everything below reads the golden file, not w: the file is
			// what clients see.
			var r resources
			require.NoError(t, json.Unmarshal(want, &r))
			requireValid(t, r)
			requireRecovered(t, a, recoverAppointment(t, r, z))
		})
	}
}

// requireRecovered compares an appointment with the one read back from
// FHIR, instants by instant.
func requireRecovered(t testing.TB, want, got qubs.Appointment) {
	t.Helper()
	if want.ReportNeededBy != nil || got.ReportNeededBy != nil {
		require.NotNil(t, want.ReportNeededBy, "reportNeededBy appeared")
		require.NotNil(t, got.ReportNeededBy, "reportNeededBy lost")
		assert.True(t, want.ReportNeededBy.Equal(*got.ReportNeededBy), "reportNeededBy %v, read back %v", want.ReportNeededBy, got.ReportNeededBy)
		want.ReportNeededBy, got.ReportNeededBy = nil, nil
	}
	assert.Equal(t, want, got, "the appointment read back from FHIR")
}

// lineDiff describes the first difference between two texts, with a few
// lines of context, "" when they are equal. A whole-file dump of both
// would bury it.
func lineDiff(want, got []byte) string {
	if bytes.Equal(want, got) {
		return ""
	}
	w, g := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	var b strings.Builder
	for j := max(0, i-3); j < i; j++ {
		fmt.Fprintf(&b, "  %4d   %s\n", j+1, w[j])
	}
	for j := i; j < min(i+4, len(w)); j++ {
		fmt.Fprintf(&b, "- %4d   %s\n", j+1, w[j])
	}
	for j := i; j < min(i+4, len(g)); j++ {
		fmt.Fprintf(&b, "+ %4d   %s\n", j+1, g[j])
	}
	return b.String()
}
