package main

import (
	"errors"
	"log/slog"
	"math"
	"os"
	"strconv"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// memoryLimitRatio is the share of the container's memory limit the Go
// runtime is given as its soft limit; the rest is for what the runtime
// does not count (SQLite's page cache is allocated outside the Go heap by
// modernc.org/sqlite's own allocator, and the binary's mapped pages).
const memoryLimitRatio = 0.9

// setMemoryLimit gives the Go runtime a soft memory limit (GOMEMLIMIT) of
// memoryLimitRatio of the memory limit provider reports, for serve the
// container's (cgroup v1 or v2). Without one the heap may grow to twice
// what is live before a collection (GOGC=100): a burst of concurrent
// 2 MiB reports could take a pod sized for its steady state over its limit
// and have it killed, where with one the collector works harder first.
// An operator's GOMEMLIMIT wins; AUTOMEMLIMIT=off leaves the runtime's
// limit as it is, AUTOMEMLIMIT=0.8 sets another ratio (the library's own
// settings, read from the process's environment, docs/configuration.md).
// It returns the limit in force (math.MaxInt64: none) and logs it, once,
// at start.
func setMemoryLimit(log *slog.Logger, provider memlimit.Provider) int64 {
	limit, err := memlimit.Set(memlimit.WithProvider(provider), memlimit.WithRatio(memoryLimitRatio))
	auto, autoSet := os.LookupEnv("AUTOMEMLIMIT")
	inForce := func() any { // the limit for the log: a number, or none
		if limit == math.MaxInt64 {
			return "none"
		}
		return limit
	}
	switch {
	case os.Getenv("GOMEMLIMIT") != "":
		// The library leaves it alone without asking the provider.
		log.Info("memory limit", "GOMEMLIMIT", inForce(), "source", "GOMEMLIMIT")
	case autoSet && auto == "off":
		log.Info("memory limit", "GOMEMLIMIT", inForce(), "source", "AUTOMEMLIMIT=off: none from the container")
	case errors.Is(err, memlimit.ErrNoCgroup), errors.Is(err, memlimit.ErrCgroupsNotSupported):
		log.Info("memory limit", "GOMEMLIMIT", inForce(), "reason", "no container memory limit to follow")
	case err != nil:
		// Not fatal: the bridge runs as it would without a container.
		log.Warn("memory limit", "GOMEMLIMIT", inForce(), "reason", userMessage(err))
	case limit == math.MaxInt64:
		log.Info("memory limit", "GOMEMLIMIT", "none", "reason", "the container's memory is not limited")
	default:
		ratio, source := memoryLimitRatio, "the container's memory limit"
		if autoSet { // a ratio the library accepted
			ratio, _ = strconv.ParseFloat(auto, 64)
			source += ", AUTOMEMLIMIT"
		}
		log.Info("memory limit", "GOMEMLIMIT", limit, "source", source, "ratio", ratio)
	}
	return limit
}
