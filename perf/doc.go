// Package perf measures the bridge against the limit of a thin layer: a
// bare httputil.ReverseProxy in front of the same QUBS simulator, driven
// side by side in one run on one machine (issue 10, goal 6).
//
// Bridge, proxy and simulator run as separate processes (the same binary
// re-executed), so the CPU time of each can be read from /proc and
// divided by the work it did; the load generator runs in the calling
// process. Rounds alternate between bridge and proxy, and the figures
// reported are medians over rounds, because the machines this runs on are
// shared and noisy. docs/performance.md explains every figure.
//
// The package is Linux-only at run time (it reads /proc); it compiles
// everywhere.
package perf
