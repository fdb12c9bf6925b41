// Command qubs-fhir-bridge is a FHIR R4 server in front of the QUBS
// Integrations API, with a QUBS simulator for demos and development.
//
//	qubs-fhir-bridge serve      the production server
//	qubs-fhir-bridge demo       simulator and bridge in one process on loopback
//	qubs-fhir-bridge qubs-sim   the simulator alone
//	qubs-fhir-bridge bench      the bridge beside a bare proxy (docs/performance.md)
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
	if err := m.Run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		// One line, in the format of every other log line (JSON, as
		// slog writes them), so that a log pipeline sees why the process
		// stopped.
		slog.New(slog.NewJSONHandler(os.Stderr, nil)).Error("qubs-fhir-bridge stopped", "error", userMessage(err))
		os.Exit(1)
	}
}
