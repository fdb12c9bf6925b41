package perf

import (
	"os/exec"
	"syscall"
)

// setDeathSignal kills the child when the harness dies, so an interrupted
// bench leaves no simulator or bridge behind.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
