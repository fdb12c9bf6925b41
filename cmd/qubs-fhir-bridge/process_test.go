package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// serveChildEnv marks the re-executed test binary that runs `serve` for
// the tests that kill a bridge process (the audit crash test, the chaos
// test).
const serveChildEnv = "QFB_SERVE_CHILD"

// TestServeChild is the bridge process of those tests: the test binary
// re-executed, running `serve` with the environment it was given, until it
// is killed, or stopped with SIGTERM as a deployment stops it (then it
// exits 0 if serve shut down cleanly). It prints its URL as
// BRIDGE_URL=... once it listens.
func TestServeChild(t *testing.T) {
	if os.Getenv(serveChildEnv) != "1" {
		t.Skip("the bridge process of the crash and chaos tests")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	m := NewMain()
	go func() {
		<-m.Ready
		fmt.Printf("\nBRIDGE_URL=%s\n", m.BridgeURL)
	}()
	if err := m.Run(ctx, []string{"serve"}); err != nil || ctx.Err() == nil {
		t.Fatalf("serve returned: %v", err)
	}
}

// startServe starts a bridge process against sim on store dsn, with extra
// settings, its log to stderr, and returns it with its base URL once it
// listens. The caller kills it (or lets it be killed at cleanup).
func startServe(t *testing.T, sim *qubssim.Server, dsn string, stderr io.Writer, extra ...string) (*exec.Cmd, string) {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run=^TestServeChild$", "-test.count=1")
	cmd.Env = append(append(os.Environ(),
		serveChildEnv+"=1",
		"QUBS_API_URL="+sim.URL,
		"QUBS_TOKEN_URL="+sim.TokenURL(),
		"QUBS_CLIENT_ID="+qubssim.DefaultClientID,
		"QUBS_CLIENT_SECRET="+qubssim.DefaultClientSecret,
		"BRIDGE_LISTEN=127.0.0.1:0",
		"BRIDGE_STORE="+dsn,
		"BRIDGE_AUTH=none",
		"BRIDGE_RATE_LIMIT=0",
	), extra...)
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "BRIDGE_URL="); ok {
				urlc <- u
			}
		}
	}()
	select {
	case base := <-urlc:
		return cmd, base
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the bridge process did not start")
		return nil, ""
	}
}
