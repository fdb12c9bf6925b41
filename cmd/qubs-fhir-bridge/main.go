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
	"fmt"
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
		fmt.Fprintln(os.Stderr, "qubs-fhir-bridge:", err)
		os.Exit(1)
	}
}
