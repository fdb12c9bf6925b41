package delivery

import "context"

// Outcomes of a delivery attempt, as an Observer hears them.
const (
	// OutcomeDelivered: QUBS took the report; the version is delivered.
	OutcomeDelivered = "delivered"
	// OutcomeFailed: the version failed for good (QUBS refused it, or it
	// was not delivered within GiveUpAfter).
	OutcomeFailed = "failed"
	// OutcomeSuperseded: a newer version of the appointment was accepted
	// during the attempt, which gave the job back unsent; the next claim
	// marks this version superseded.
	OutcomeSuperseded = "superseded"
	// OutcomeRetry: a transient failure; the version is due again later.
	OutcomeRetry = "retry"
	// OutcomeLeaseLost: the worker lost the job (its lease ran out, or the
	// version stopped being pending); whoever holds it now settles it.
	OutcomeLeaseLost = "lease_lost"
)

// Outcomes lists every outcome, for observers that prepare per outcome.
var Outcomes = []string{OutcomeDelivered, OutcomeFailed, OutcomeSuperseded, OutcomeRetry, OutcomeLeaseLost}

// AttemptInfo describes a delivery attempt without any PHI.
type AttemptInfo struct {
	Domain string
	// Attempt counts the claims of the version, this one included.
	Attempt int
	// CorrelationID is the attempt's, sent to QUBS and logged.
	CorrelationID string
}

// Observer watches delivery attempts for metrics and traces, so that this
// package needs neither. It must be safe for concurrent use.
type Observer interface {
	// Attempt is told that an attempt starts. The context it returns
	// carries the attempt to the QUBS and store calls made for it (a
	// span); end is called once with the attempt's Outcome*.
	Attempt(ctx context.Context, a AttemptInfo) (context.Context, func(outcome string))
}
