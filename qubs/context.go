package qubs

import "context"

type correlationKey struct{}

// WithCorrelationID returns a context whose QUBS calls send id as
// X-Correlation-Id, so one id follows a request from the FHIR client through
// the bridge to QUBS and back into logs and OperationOutcomes.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey{}, id)
}

// CorrelationID returns the id set by WithCorrelationID, or "".
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey{}).(string)
	return id
}
