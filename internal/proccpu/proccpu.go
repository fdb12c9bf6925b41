// Package proccpu reads the CPU time of processes from Linux's /proc, for
// the bench harness and the store benchmarks: what a process used is its
// own cost, which Go's runtime cannot tell of another process.
package proccpu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// clockTick is USER_HZ, the unit of /proc's CPU times: 100 on every Linux
// architecture Go supports.
const clockTick = 100

// Of is the CPU time (user and system) process pid has used so far.
func Of(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of process %d (Linux /proc is needed): %w", pid, err)
	}
	_, d, err := parse(b)
	return d, err
}

// Named is the CPU time used so far by every process whose command name
// is name (PostgreSQL's server processes are all "postgres"). A process
// that exited took its time with it, so two readings compare only while
// the processes of interest stay up (a database's pooled backends do).
// Zero without /proc.
func Named(name string) time.Duration {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var sum time.Duration
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // gone since the glob
		}
		if comm, d, err := parse(b); err == nil && comm == name {
			sum += d
		}
	}
	return sum
}

// parse reads the command name and utime + stime (fields 2, 14 and 15) of
// a /proc/PID/stat. The command name may hold spaces and parentheses, so
// fields are counted from the last ')'.
func parse(b []byte) (comm string, d time.Duration, err error) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return "", 0, errors.New("malformed /proc stat: no command name")
	}
	f := bytes.Fields(b[end+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return "", 0, errors.New("malformed /proc stat: too few fields")
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, errors.New("malformed /proc stat: utime or stime is not a number")
	}
	return string(b[open+1 : end]), time.Duration(utime+stime) * time.Second / clockTick, nil
}
