// Command qubs-fhir-bridge is a FHIR R4 server in front of the QUBS
// Integrations API, with a QUBS simulator for demos and development.
//
//	qubs-fhir-bridge serve      the production server
//	qubs-fhir-bridge demo       simulator and bridge in one process on loopback
//	qubs-fhir-bridge qubs-sim   the simulator alone
//	qubs-fhir-bridge bench      the bridge beside a bare proxy (docs/performance.md)
//	qubs-fhir-bridge check      serve's configuration checked without serving
//	qubs-fhir-bridge deliveries list, retry or abandon deliveries to QUBS
//
// Every flag has an environment twin; `qubs-fhir-bridge help` lists them.
package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := NewMain()
	err := m.Run(ctx, os.Args[1:])
	if err != nil && !errors.Is(err, errUsage) && !errors.Is(err, errReported) {
		// One line, in the format of every other log line (JSON, as
		// slog writes them), so that a log pipeline sees why the process
		// stopped. A usage mistake and a command that printed its own
		// verdict (check, deliveries) need no other.
		slog.New(slog.NewJSONHandler(os.Stderr, nil)).Error("qubs-fhir-bridge stopped", "error", userMessage(err))
	}
	os.Exit(exitCode(err))
}

// exitCode is 0 for success, 2 for a usage mistake, 1 for anything else.
func exitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	return 1
}
