package perf

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The bridge's profiles (Config.ProfileDir): the harness runs each bridge
// with BRIDGE_PPROF on a metrics listener of its own and saves, as the
// work goes, a CPU profile of each of its worklist and read rounds and
// the heap and allocations after each report phase, for `go tool pprof`.
// Serving them costs the bridge a little CPU (the profiler's signal, 100
// a second, during the rounds it profiles), so a profiled run's figures
// are slightly the bridge's worse.

// checkProfileDir makes the profile directory, which must be new or
// empty: profiles of an earlier run beside this one's would be merged by
// a `go tool pprof DIR/*.cpu.pb.gz`.
func checkProfileDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: profile directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("bench: profile directory: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("bench: profile directory %s is not empty; name a new or empty one", dir)
	}
	return nil
}

// pprofEnv is the environment that makes a bridge serve its profiles on
// a free loopback port, and that port's base URL; none without a profile
// directory.
func (r *runner) pprofEnv() ([]string, string, error) {
	if r.cfg.ProfileDir == "" {
		return nil, "", nil
	}
	env, u, err := metricsEnv()
	return append(env, "BRIDGE_PPROF=on"), u, err
}

// metricsEnv is the environment of a bridge with its metrics listener on
// a free loopback address, and that listener's base URL.
func metricsEnv() ([]string, string, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	return []string{"BRIDGE_METRICS_LISTEN=" + addr}, "http://" + addr, nil
}

// roundProfile is a CPU profile being taken during a round.
type roundProfile struct {
	cancel context.CancelFunc
	errc   chan error // nil: nothing is being taken
	waited bool
}

// profileRound starts a CPU profile of c for a round of d, to be written
// as file. The profile runs a second past the round, so that the
// profiler's stop and encoding fall after the round's CPU readings
// whatever the round's length; that adds idle time to the profile, not
// work. Without profiles (c serves none) it takes nothing.
func (r *runner) profileRound(ctx context.Context, c *child, d time.Duration, file string) *roundProfile {
	if c.pprof == "" {
		return &roundProfile{cancel: func() {}}
	}
	secs := int(math.Ceil(d.Seconds())) + 1
	ctx, cancel := context.WithCancel(ctx)
	p := &roundProfile{cancel: cancel, errc: make(chan error, 1)}
	go func() {
		p.errc <- r.saveProfile(ctx, c, "/debug/pprof/profile?seconds="+strconv.Itoa(secs), file, time.Duration(secs)*time.Second+time.Minute)
	}()
	return p
}

// wait returns once the profile is written, or why it is not.
func (p *roundProfile) wait() error {
	if p.errc == nil || p.waited {
		return nil
	}
	p.waited = true
	defer p.cancel()
	return <-p.errc
}

// stop abandons a profile not waited for (a round that failed), and
// returns once nothing is left running.
func (p *roundProfile) stop() {
	if p.errc == nil || p.waited {
		return
	}
	p.cancel()
	_ = p.wait()
}

// saveProfile writes what c's pprof endpoint path answers, within
// timeout, to file in the profile directory; a file it could not write
// whole is removed.
func (r *runner) saveProfile(ctx context.Context, c *child, path, file string, timeout time.Duration) error {
	if c.pprof == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	b, err := get(ctx, http.DefaultClient, c.pprof+path)
	if err != nil {
		return fmt.Errorf("profile %s: %w", file, err)
	}
	name := filepath.Join(r.cfg.ProfileDir, file)
	if err := os.WriteFile(name, b, 0o644); err != nil {
		os.Remove(name)
		return fmt.Errorf("profile %s: %w", file, err)
	}
	r.mu.Lock()
	r.res.Profiles = append(r.res.Profiles, file)
	r.mu.Unlock()
	return nil
}

// saveMemoryProfiles writes c's heap (what is live) and allocations (all
// since it started) as phase.heap.pb.gz and phase.allocs.pb.gz.
func (r *runner) saveMemoryProfiles(ctx context.Context, c *child, phase string) error {
	for _, p := range []string{"heap", "allocs"} {
		if err := r.saveProfile(ctx, c, "/debug/pprof/"+p, phase+"."+p+".pb.gz", time.Minute); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	return nil
}
