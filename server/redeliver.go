package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// RedeliverDefinition is the canonical URL of the $redeliver
// OperationDefinition (docs/OperationDefinition-DiagnosticReport-redeliver.json).
const RedeliverDefinition = mapping.Base + "OperationDefinition/DiagnosticReport-redeliver"

var redeliverOperation = fhir.OperationCapability{
	Name:       "redeliver",
	Definition: RedeliverDefinition,
	Documentation: "POST [base]/DiagnosticReport/[id]/$redeliver sends the report's latest version to QUBS again " +
		"when its delivery failed (409 otherwise). Needs DiagnosticReport update permission. No input parameters; " +
		"answers Parameters (report, state, attempts, nextAttempt).",
}

// redeliverDiagnosticReport is $redeliver: the latest version of a report
// whose delivery failed (QUBS refused it, or attempts ran out) goes back in
// the delivery queue, due now, for a client that fixed the cause (the
// appointment is pending reporting again, say) and wants it sent without
// making a new version. Only the latest version: an older one would be
// superseded by it anyway, and the store refuses a version with a newer
// one for its appointment. docs/deliveries.md.
func (s *Server) redeliverDiagnosticReport(c *gin.Context) error {
	ctx, domain, id := c.Request.Context(), domainOf(c), c.Param("id")
	if err := s.readNoParameters(c); err != nil {
		return err
	}
	r, err := s.cfg.Store.Report(ctx, domain, id)
	if errors.Is(err, store.ErrNotFound) {
		return fhir.Errorf(http.StatusNotFound, "not-found", "DiagnosticReport/%s is not known", id)
	}
	if err != nil {
		return err
	}
	disclose(c, "DiagnosticReport/"+id, r.PatientRef)
	err = s.cfg.Store.RequeueDelivery(ctx, domain, id, r.Version, time.Now())
	var se *store.Error
	switch {
	case errors.Is(err, store.ErrConflict) && errors.As(err, &se) && se.Err != nil:
		// The store's reason names states, ids and versions only.
		return fhir.Errorf(http.StatusConflict, "business-rule", "DiagnosticReport/%s version %d cannot be redelivered: %s", id, r.Version, se.Err.Error())
	case errors.Is(err, store.ErrNotFound):
		return fhir.Errorf(http.StatusNotFound, "not-found", "DiagnosticReport/%s is not known", id)
	case err != nil:
		return err
	}
	s.kick()
	v, err := s.cfg.Store.ReportVersion(ctx, domain, id, r.Version)
	if err != nil {
		return err
	}
	s.write(c, http.StatusOK, redeliverResult(v))
	return nil
}

// readNoParameters accepts what a client may send to an operation without
// input parameters: no body, or a Parameters resource without parameters.
func (s *Server) readNoParameters(c *gin.Context) error {
	if c.Request.ContentLength == 0 || c.Request.Body == nil || c.Request.Body == http.NoBody {
		return nil
	}
	body, err := s.readResource(c, "Parameters")
	if err != nil {
		return err
	}
	var p struct {
		Parameter []any `json:"parameter"`
	}
	if err := json.Unmarshal(body, &p); err != nil || len(p.Parameter) > 0 {
		return &fhir.Error{Status: http.StatusBadRequest, Issues: []fhir.Issue{{Severity: "error", Code: "not-supported",
			Expression: []string{"Parameters.parameter"}, Diagnostics: "$redeliver takes no parameters"}}}
	}
	return nil
}

// parameters is a FHIR Parameters resource with the value types the
// bridge's operations answer.
type parameters struct {
	ResourceType string      `json:"resourceType"`
	Parameter    []parameter `json:"parameter"`
}

type parameter struct {
	Name           string         `json:"name"`
	ValueReference *fhirReference `json:"valueReference,omitempty"`
	ValueCode      string         `json:"valueCode,omitempty"`
	ValueInteger   *int           `json:"valueInteger,omitempty"`
	ValueInstant   string         `json:"valueInstant,omitempty"`
}

type fhirReference struct {
	Reference string `json:"reference"`
}

// redeliverResult says what $redeliver did: the version queued, its state
// (pending), the attempts so far and when it is due. No PHI.
func redeliverResult(r *store.Report) parameters {
	attempts := r.Delivery.Attempts
	return parameters{ResourceType: "Parameters", Parameter: []parameter{
		{Name: "report", ValueReference: &fhirReference{Reference: "DiagnosticReport/" + r.ID + "/_history/" + strconv.Itoa(r.Version)}},
		{Name: "state", ValueCode: r.Delivery.State},
		{Name: "attempts", ValueInteger: &attempts},
		{Name: "nextAttempt", ValueInstant: r.Delivery.NextAttemptAt.UTC().Format(time.RFC3339Nano)},
	}}
}
