//go:build !unix

package server_test

import "time"

// processCPU is not measured here: benchmarks report cpu-µs/op as 0.
func processCPU() time.Duration { return 0 }
