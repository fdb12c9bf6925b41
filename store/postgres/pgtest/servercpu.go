package pgtest

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// ServerCPU is the CPU time (user and system) used so far by the
// processes named postgres on this machine: the server's backends, WAL
// writer, checkpointer and the rest. Benchmarks subtract two readings
// taken while their connections stay open (a backend that exits takes
// its time with it) to report the database's share of an operation,
// which the benchmark process's own rusage leaves out. Zero when /proc
// cannot be read (not Linux) or the server runs elsewhere: read it as
// "not measured", never as free.
func ServerCPU() time.Duration {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var ticks int64
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so fields
		// are counted from its closing parenthesis.
		open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || end < open || string(b[open+1:end]) != "postgres" {
			continue
		}
		fields := bytes.Fields(b[end+1:])
		if len(fields) < 13 {
			continue
		}
		// utime and stime are fields 14 and 15 of stat, the 12th and
		// 13th after comm (state is the first).
		u, _ := strconv.ParseInt(string(fields[11]), 10, 64)
		s, _ := strconv.ParseInt(string(fields[12]), 10, 64)
		ticks += u + s
	}
	// USER_HZ is 100 on every Linux architecture Go supports.
	return time.Duration(ticks) * 10 * time.Millisecond
}
