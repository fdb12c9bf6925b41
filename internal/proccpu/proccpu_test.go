package proccpu

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	// A command name may hold spaces and parentheses; utime 250 and stime
	// 50 ticks are fields 14 and 15.
	line := "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 12 0 999 123456 789 18446744073709551615\n"
	comm, got, err := parse([]byte(line))
	require.NoError(t, err)
	assert.Equal(t, "my (odd) name", comm)
	assert.Equal(t, 3*time.Second, got)

	for name, bad := range map[string]string{
		"no command":  "4242 S 1 2 3",
		"too short":   "4242 (x) S 1 2 3",
		"not numbers": "4242 (x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 a b 0 0",
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := parse([]byte(bad))
			assert.Error(t, err)
		})
	}
}

// TestNamed: this test's own process is counted under its command name,
// and a name no process has sums to zero.
func TestNamed(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	b, err := os.ReadFile("/proc/self/comm")
	require.NoError(t, err)
	for start := time.Now(); time.Since(start) < 30*time.Millisecond; {
		// Use some CPU, so that at least one tick is counted.
	}
	own, err := Of(os.Getpid())
	require.NoError(t, err)
	assert.GreaterOrEqual(t, Named(string(b[:len(b)-1])), own)
	assert.Zero(t, Named("no such process name"))
}
