package mapping

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// The audit trail is served as FHIR AuditEvent after the IHE Basic Audit
// Log Patterns (BALP, https://profiles.ihe.net/ITI/BALP/), RESTful
// patterns, as the server records them. AuditEventFromRecord maps:
//
//	AuditRecord     AuditEvent
//	ID              id
//	-               type = audit-event-type#rest "Restful Operation"
//	Interaction     subtype = restful-interaction#<interaction>
//	Action          action
//	Recorded        recorded (UTC)
//	Outcome         outcome
//	OutcomeDesc     outcomeDesc
//	AgentID         agent[0] (the client, DCM#110153 Source Role ID,
//	                requestor): who.identifier (SystemClientID)
//	AgentMethod     agent[0].extension ExtAuthMethod
//	TokenID         agent[0].policy (BALP: the token's id), path-escaped
//	NetworkAddr     agent[0].network (type 2 IP address, else 1 name)
//	-               agent[1] (the bridge, DCM#110152 Destination Role ID)
//	Domain          source.site; source.observer "qubs-fhir-bridge",
//	                source.type security-source-type#4 Application Server
//	PatientRefs     entity per patient: what, type 1 Person, role 1 Patient
//	EntityRefs      entity per resource: what, type 2 System Object,
//	                role 4 Domain Resource
//	Query           entity: type 2, role 24 Query, query (base64)
//	CorrelationID   entity: type BasicAuditEntityType#XrequestId,
//	                what.identifier.value (BALP's transaction entity)
//	RequestPath     extension ExtRequestRoute
//
// Choices where BALP leaves room or the bridge differs:
//
//   - The bridge's principals are client systems (static tokens, JWT and
//     SMART backend services), not users, so there is no user agent: the
//     client agent is the requestor.
//   - The query entity holds the resource type and parameter names only
//     (store.AuditQuery), not the query with its values as BALP shows it:
//     values may be PHI, and the audit trail outlives PHI. The patients a
//     search concerned are the patient entities.
//   - The correlation id goes where BALP puts X-Request-Id, an entity with
//     what.identifier, so one search of entity finds the request in the
//     logs. The route is an extension: AuditEvent.entity.detail would fit,
//     but the samply model always writes both valueString and
//     valueBase64Binary there, which R4 forbids.
//   - No meta.profile is claimed: the events follow BALP but are not
//     validated against its profiles.

// Systems and extensions of the AuditEvent mapping defined by the bridge.
const (
	// SystemClientID is the system of the client id (Principal.Subject)
	// on AuditEvent.agent.who.identifier.
	SystemClientID = Base + "NamingSystem/client-id"
	// ExtAuthMethod (AuditEvent.agent, valueString none|static|jwt|smart)
	// is how the client authenticated.
	ExtAuthMethod = Base + "StructureDefinition/auth-method"
	// ExtRequestRoute (AuditEvent, valueString) is the route template the
	// request matched, e.g. "/fhir/:domain/ServiceRequest/:id".
	ExtRequestRoute = Base + "StructureDefinition/request-route"
)

// External systems of the AuditEvent mapping.
const (
	SystemAuditEventType      = "http://terminology.hl7.org/CodeSystem/audit-event-type"
	SystemRestfulInteraction  = "http://hl7.org/fhir/restful-interaction"
	SystemAuditEntityType     = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
	SystemObjectRole          = "http://terminology.hl7.org/CodeSystem/object-role"
	SystemSecuritySourceType  = "http://terminology.hl7.org/CodeSystem/security-source-type"
	SystemBALPAuditEntityType = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
)

// AuditObserver names the bridge in AuditEvent.source.observer and as the
// server agent.
const AuditObserver = "qubs-fhir-bridge"

// ErrInvalidAuditRecord is returned by AuditEventFromRecord for a record
// the store would not have accepted: no valid id, action, outcome,
// interaction or time, or a malformed reference.
var ErrInvalidAuditRecord = errors.New("mapping: invalid audit record")

var (
	auditActions = map[string]fhir.AuditEventAction{
		store.AuditActionCreate:  fhir.AuditEventActionC,
		store.AuditActionRead:    fhir.AuditEventActionR,
		store.AuditActionUpdate:  fhir.AuditEventActionU,
		store.AuditActionDelete:  fhir.AuditEventActionD,
		store.AuditActionExecute: fhir.AuditEventActionE,
	}
	auditOutcomes = map[string]fhir.AuditEventOutcome{
		store.AuditOutcomeSuccess:        fhir.AuditEventOutcome0,
		store.AuditOutcomeMinorFailure:   fhir.AuditEventOutcome4,
		store.AuditOutcomeSeriousFailure: fhir.AuditEventOutcome8,
		store.AuditOutcomeMajorFailure:   fhir.AuditEventOutcome12,
	}
)

// AuditEventFromRecord maps one audit record to a FHIR R4 AuditEvent after
// IHE BALP; the table above says where each field goes. Free text
// (OutcomeDesc, identifiers) is made FHIR-safe: control characters and
// invalid UTF-8 become U+FFFD.
// Errors: ErrInvalidAuditRecord.
func AuditEventFromRecord(r *store.AuditRecord) (*fhir.AuditEvent, error) {
	if err := checkAuditRecord(r); err != nil {
		return nil, err
	}
	ev := &fhir.AuditEvent{
		Id: ptr(r.ID),
		Type: fhir.Coding{System: ptr(SystemAuditEventType), Code: ptr("rest"),
			Display: ptr("Restful Operation")},
		// The restful-interaction displays are the codes themselves.
		Subtype: []fhir.Coding{{System: ptr(SystemRestfulInteraction), Code: ptr(r.Interaction),
			Display: ptr(r.Interaction)}},
		Action:      ptr(auditActions[r.Action]),
		Recorded:    r.Recorded.UTC().Format(time.RFC3339Nano),
		Outcome:     ptr(auditOutcomes[r.Outcome]),
		OutcomeDesc: optionalSafe(r.OutcomeDesc),
		Agent:       []fhir.AuditEventAgent{clientAgent(r), serverAgent()},
		Source: fhir.AuditEventSource{
			Site:     optionalSafe(r.Domain),
			Observer: fhir.Reference{Display: ptr(AuditObserver)},
			Type: []fhir.Coding{{System: ptr(SystemSecuritySourceType), Code: ptr("4"),
				Display: ptr("Application Server")}},
		},
	}
	if r.RequestPath != "" {
		ev.Extension = append(ev.Extension, fhir.Extension{Url: ExtRequestRoute, ValueString: ptr(safeString(r.RequestPath))})
	}
	for _, p := range r.PatientRefs {
		ev.Entity = append(ev.Entity, fhir.AuditEventEntity{
			What: &fhir.Reference{Reference: ptr(p)},
			Type: &fhir.Coding{System: ptr(SystemAuditEntityType), Code: ptr("1"), Display: ptr("Person")},
			Role: &fhir.Coding{System: ptr(SystemObjectRole), Code: ptr("1"), Display: ptr("Patient")},
		})
	}
	for _, e := range r.EntityRefs {
		ev.Entity = append(ev.Entity, fhir.AuditEventEntity{
			What: &fhir.Reference{Reference: ptr(e)},
			Type: systemObject(),
			Role: &fhir.Coding{System: ptr(SystemObjectRole), Code: ptr("4"), Display: ptr("Domain Resource")},
		})
	}
	if r.Query != "" {
		ev.Entity = append(ev.Entity, fhir.AuditEventEntity{
			Type:  systemObject(),
			Role:  &fhir.Coding{System: ptr(SystemObjectRole), Code: ptr("24"), Display: ptr("Query")},
			Query: ptr(base64.StdEncoding.EncodeToString([]byte(r.Query))),
		})
	}
	if r.CorrelationID != "" {
		ev.Entity = append(ev.Entity, fhir.AuditEventEntity{
			What: &fhir.Reference{Identifier: &fhir.Identifier{Value: ptr(safeString(r.CorrelationID))}},
			Type: &fhir.Coding{System: ptr(SystemBALPAuditEntityType), Code: ptr("XrequestId"),
				Display: ptr("X-Request-Id")},
		})
	}
	return ev, nil
}

// checkAuditRecord refuses what FHIR cannot carry (or the store would have
// refused): the mapping cannot make up an id, a time or a code.
func checkAuditRecord(r *store.AuditRecord) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidAuditRecord, fmt.Sprintf(format, args...))
	}
	switch {
	case r == nil:
		return bad("nil record")
	case !validID(r.ID):
		return bad("id %q is not a FHIR id", r.ID)
	case r.Recorded.IsZero():
		return bad("no time")
	}
	if _, ok := auditActions[r.Action]; !ok {
		return bad("action %q", r.Action)
	}
	if _, ok := auditOutcomes[r.Outcome]; !ok {
		return bad("outcome %q", r.Outcome)
	}
	if !slices.Contains(store.AuditInteractions, r.Interaction) {
		return bad("interaction %q", r.Interaction)
	}
	for _, p := range r.PatientRefs {
		if id, ok := strings.CutPrefix(p, "Patient/"); !ok || !validID(id) {
			return bad("patient reference %q", p)
		}
	}
	for _, e := range r.EntityRefs {
		if !validRelativeRef(e) {
			return bad("entity reference %q", e)
		}
	}
	return nil
}

// validRelativeRef reports whether s is Type/id or Type/id/_history/vid.
func validRelativeRef(s string) bool {
	typ, rest, ok := strings.Cut(s, "/")
	if !ok || typ == "" || typ[0] < 'A' || typ[0] > 'Z' || strings.IndexFunc(typ, func(c rune) bool {
		return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z')
	}) >= 0 {
		return false
	}
	id, version, versioned := strings.Cut(rest, "/_history/")
	return validID(id) && (!versioned || validID(version))
}

// clientAgent is the BALP client: the system that sent the request, and,
// the bridge having no users, the requestor.
func clientAgent(r *store.AuditRecord) fhir.AuditEventAgent {
	a := fhir.AuditEventAgent{
		Type: &fhir.CodeableConcept{Coding: []fhir.Coding{{System: ptr(SystemDICOM), Code: ptr("110153"),
			Display: ptr("Source Role ID")}}},
		Requestor: true,
	}
	if r.AgentID != "" {
		a.Who = &fhir.Reference{Identifier: &fhir.Identifier{System: ptr(SystemClientID), Value: ptr(safeString(r.AgentID))}}
	} else {
		// BRIDGE_AUTH=none: nobody to name, but say so rather than leave
		// the agent blank.
		a.Who = &fhir.Reference{Display: ptr("anonymous")}
	}
	if r.AgentMethod != "" {
		a.Extension = []fhir.Extension{{Url: ExtAuthMethod, ValueString: ptr(safeString(r.AgentMethod))}}
	}
	if r.TokenID != "" {
		// policy is a uri, which allows no whitespace; path escaping
		// leaves ordinary jtis (UUIDs, base64url) as they are and is
		// reversible.
		a.Policy = []string{url.PathEscape(r.TokenID)}
	}
	if r.NetworkAddr != "" {
		// R4 network types: 1 machine name, 2 IP address.
		typ := fhir.AuditEventAgentNetworkType1
		if _, err := netip.ParseAddr(r.NetworkAddr); err == nil {
			typ = fhir.AuditEventAgentNetworkType2
		} else if _, err := netip.ParseAddrPort(r.NetworkAddr); err == nil {
			typ = fhir.AuditEventAgentNetworkType2
		}
		a.Network = &fhir.AuditEventAgentNetwork{Address: ptr(safeString(r.NetworkAddr)), Type: &typ}
	}
	return a
}

// serverAgent is the BALP server: the bridge itself.
func serverAgent() fhir.AuditEventAgent {
	return fhir.AuditEventAgent{
		Type: &fhir.CodeableConcept{Coding: []fhir.Coding{{System: ptr(SystemDICOM), Code: ptr("110152"),
			Display: ptr("Destination Role ID")}}},
		Who:       &fhir.Reference{Display: ptr(AuditObserver)},
		Requestor: false,
	}
}

func systemObject() *fhir.Coding {
	return &fhir.Coding{System: ptr(SystemAuditEntityType), Code: ptr("2"), Display: ptr("System Object")}
}

// optionalSafe is nil for "", else a FHIR-safe copy of s.
func optionalSafe(s string) *string {
	if s == "" {
		return nil
	}
	return ptr(safeString(s))
}
