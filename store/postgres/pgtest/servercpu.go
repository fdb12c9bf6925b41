package pgtest

import (
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/internal/proccpu"
)

// ServerCPU is the CPU time (user and system) used so far by the
// processes named postgres on this machine: the server's backends, WAL
// writer, checkpointer and the rest. Benchmarks subtract two readings
// taken while their connections stay open (a backend that exits takes
// its time with it) to report the database's share of an operation,
// which the benchmark process's own rusage leaves out. Other clients of
// the same server (a parallel test run) count too. Zero when /proc cannot
// be read (not Linux) or the server runs elsewhere: read it as "not
// measured", never as free.
func ServerCPU() time.Duration { return proccpu.Named("postgres") }
