package main

import (
	"bytes"
	"errors"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// TestSetMemoryLimit: serve gives the runtime 90 % of the container's
// memory limit as its soft limit, unless the operator set GOMEMLIMIT or
// AUTOMEMLIMIT=off, and says at start which it is. Not parallel: the
// limit and the environment are the process's.
func TestSetMemoryLimit(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		name     string
		env      map[string]string
		provider memlimit.Provider
		want     int64 // the limit in force after; 0: the one before
		log      string
	}{
		{"the container's limit", nil, memlimit.Limit(gib), 966367641, `"GOMEMLIMIT":966367641,"source":"the container's memory limit","ratio":0.9}`},
		{"another ratio", map[string]string{"AUTOMEMLIMIT": "0.5"}, memlimit.Limit(gib), gib / 2, `"GOMEMLIMIT":536870912,"source":"the container's memory limit, AUTOMEMLIMIT","ratio":0.5}`},
		{"the operator's GOMEMLIMIT", map[string]string{"GOMEMLIMIT": "300MiB"}, memlimit.Limit(gib), 0, `"GOMEMLIMIT":"none","source":"GOMEMLIMIT"`},
		{"turned off", map[string]string{"AUTOMEMLIMIT": "off"}, memlimit.Limit(gib), 0, `"GOMEMLIMIT":"none","source":"AUTOMEMLIMIT=off`},
		{"a bad ratio", map[string]string{"AUTOMEMLIMIT": "2"}, memlimit.Limit(gib), 0, `"level":"WARN"`},
		{"no cgroup", nil, func() (uint64, error) { return 0, memlimit.ErrNoCgroup }, 0, `no container memory limit to follow`},
		{"not limited", nil, func() (uint64, error) { return 0, memlimit.ErrNoLimit }, math.MaxInt64, `"GOMEMLIMIT":"none","reason":"the container's memory is not limited"`},
		{"unreadable", nil, func() (uint64, error) { return 0, errors.New("mountinfo unreadable") }, 0, `"level":"WARN","msg":"memory limit","GOMEMLIMIT":"none","reason":"failed to set GOMEMLIMIT: mountinfo unreadable"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each case starts from no limit, as serve does in a process
			// whose GOMEMLIMIT is unset, whatever the test process has.
			prev := debug.SetMemoryLimit(math.MaxInt64)
			t.Cleanup(func() { debug.SetMemoryLimit(prev) })
			const before = math.MaxInt64
			for _, k := range []string{"GOMEMLIMIT", "AUTOMEMLIMIT"} {
				t.Setenv(k, "") // restored after the test
				if v, ok := tc.env[k]; ok {
					require.NoError(t, os.Setenv(k, v))
				} else {
					require.NoError(t, os.Unsetenv(k)) // AUTOMEMLIMIT="" would be a bad ratio
				}
			}
			var logs bytes.Buffer
			got := setMemoryLimit(slog.New(slog.NewJSONHandler(&logs, nil)), tc.provider)
			want := tc.want
			if want == 0 {
				want = before
			}
			assert.Equal(t, want, debug.SetMemoryLimit(-1), "the limit in force")
			assert.Equal(t, want, got, "what it returns")
			assert.Contains(t, logs.String(), tc.log)
			assert.Equal(t, 1, strings.Count(logs.String(), "\n"), "one line at start: %s", logs.String())
		})
	}
}

// TestServeSetsTheMemoryLimit: the serve process follows what it is told
// (here the operator's GOMEMLIMIT, which the runtime read at start) and
// says so in its log.
func TestServeSetsTheMemoryLimit(t *testing.T) {
	t.Parallel()
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Seed: 1, Appointments: 5})
	require.NoError(t, err)
	t.Cleanup(func() { sim.Close() })
	var stderr syncBuffer
	cmd, _ := startServe(t, sim, "sqlite:"+t.TempDir()+"/bridge.db", &stderr, "GOMEMLIMIT=300MiB")
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// Logged before the URL is printed, but the log reaches the buffer
	// through a pipe of its own.
	want := `"msg":"memory limit","GOMEMLIMIT":314572800,"source":"GOMEMLIMIT"`
	assert.Eventually(t, func() bool { return strings.Contains(stderr.String(), want) }, 10*time.Second, 10*time.Millisecond,
		"the log says %s: %s", want, &stderr)
}
