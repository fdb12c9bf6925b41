package perf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/internal/proccpu"
)

// Launcher returns the command that runs the program (this binary) with
// args and, on top of a clean environment, env.
type Launcher func(args, env []string) *exec.Cmd

// Self launches the running executable: the harness re-executes itself as
// simulator, bridge and proxy.
func Self() (Launcher, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the running executable: %w", err)
	}
	return func(args, env []string) *exec.Cmd {
		cmd := exec.Command(exe, args...)
		cmd.Env = append(CleanEnviron(), env...)
		return cmd
	}, nil
}

// CleanEnviron is the caller's environment without the bridge's and the
// simulator's settings, so that a BRIDGE_STORE or BRIDGE_TLS_CERT set in
// the operator's shell cannot change what is measured.
func CleanEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "BRIDGE_") || strings.HasPrefix(kv, "QUBS_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// child is one process of the harness, its output kept in a file (a pipe
// left unread would stall it).
type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
	// pprof is the base URL of a bridge's profiles (Config.ProfileDir),
	// "" when it serves none; metrics that of its Prometheus metrics, ""
	// when it serves none (profiles come with metrics).
	pprof, metrics string
}

// readiness tells from a child's output so far (or otherwise) whether it
// is ready, and where it listens.
type readiness func(output []byte) (addr string, ok bool)

// printed is ready when the output matches re, whose first group is the
// address.
func printed(re *regexp.Regexp) readiness {
	return func(output []byte) (string, bool) {
		if m := re.FindSubmatch(output); m != nil {
			return string(m[1]), true
		}
		return "", false
	}
}

// startChild starts a process and waits until it is ready.
func startChild(ctx context.Context, launch Launcher, dir, name string, args, env []string, ready readiness) (*child, string, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, "", fmt.Errorf("starting %s: %w", name, err)
	}
	cmd := launch(args, env)
	cmd.Stdout, cmd.Stderr = f, f
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(logPath)
		if addr, ok := ready(b); ok {
			return c, addr, nil
		}
		select {
		case <-c.done:
			return nil, "", fmt.Errorf("%s exited before it was ready (%v):\n%s", name, c.err, tail(b))
		case <-deadline.C:
			c.stop()
			return nil, "", fmt.Errorf("%s was not ready within a minute:\n%s", name, tail(b))
		case <-ctx.Done():
			c.stop()
			return nil, "", ctx.Err()
		case <-tick.C:
		}
	}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop asks the process to shut down as an operator would (SIGTERM), and
// kills it if it has not within 20 seconds.
func (c *child) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// alive fails when the process has exited, with the end of its output.
func (c *child) alive() error {
	select {
	case <-c.done:
		b, _ := os.ReadFile(c.log)
		return fmt.Errorf("%s exited (%v):\n%s", c.name, c.err, tail(b))
	default:
		return nil
	}
}

func tail(b []byte) string {
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// cpuTime is the CPU time (user and system) the process has used so far.
func cpuTime(pid int) (time.Duration, error) { return proccpu.Of(pid) }

// memory is the resident set of a process now (VmRSS) and at its peak
// (VmHWM), in bytes.
type memory struct{ rss, hwm int64 }

func memoryOf(pid int) (memory, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memory{}, fmt.Errorf("reading the memory of process %d: %w", pid, err)
	}
	return parseStatus(b)
}

func parseStatus(b []byte) (memory, error) {
	var m memory
	var seen int
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return memory{}, fmt.Errorf("malformed /proc status line %q", line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("malformed /proc status line %q", line)
		}
		if k == "VmRSS" {
			m.rss = n << 10
		} else {
			m.hwm = n << 10
		}
		seen++
	}
	if seen != 2 {
		return memory{}, errors.New("/proc status lacks VmRSS or VmHWM")
	}
	return m, nil
}

// resetPeak sets VmHWM back to the current RSS (clear_refs value 5, Linux
// 4.0+), so that the peak of one phase is not the peak of an earlier one.
func resetPeak(pid int) error {
	if err := os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0); err != nil {
		return fmt.Errorf("resetting the peak RSS of process %d: %w", pid, err)
	}
	return nil
}
