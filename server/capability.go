package server

import (
	"net/http"
	"slices"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/subs"
)

// typeDocs says what each resource type is, for the CapabilityStatement;
// what it can do comes from the route table.
var typeDocs = map[string]fhir.ResourceCapability{
	"ServiceRequest": {Documentation: "Studies pending reporting in QUBS. Search by POST [base]/ServiceRequest/_search is also accepted."},
	"Patient":        {Documentation: "Patients of appointments pending reporting."},
	"Practitioner":   {Documentation: "Referring doctors and assigned radiologists."},
	"Organization":   {Documentation: "Referring clinics."},
	"DocumentReference": {Documentation: "QUBS appointment attachments (referrals, worksheets, report artifacts). " +
		"Create uploads one PDF or DICOM SR report artifact to QUBS."},
	"Binary":        {Documentation: "Attachment bytes, streamed from QUBS; files sent for use as report artifacts."},
	"Communication": {Documentation: "QUBS appointment and patient comments and alerts. Create posts a comment to QUBS."},
	"Flag":          {Documentation: "QUBS alerts (appointment and patient level)."},
	"DiagnosticReport": {Versioning: "versioned-update", ConditionalCreate: true,
		Documentation: "Reports for QUBS. Accepted reports are stored and delivered to QUBS exactly once, " +
			"with their PDF and DICOM SR presentedForms uploaded first; the delivery state is an extension of the resource."},
	"ImagingStudy": {Documentation: "One study per appointment pending reporting, with its DICOM Study Instance UID (identifier urn:dicom:uid) when QUBS has one; " +
		"the id is the ServiceRequest's. Searches walk the QUBS worklist."},
	"Task": {Documentation: "The reporting worklist as FHIR Workflow Tasks, one per appointment pending reporting (the id is the ServiceRequest's): " +
		"requested, in-progress once a preliminary report was delivered through this bridge, completed once a final was. Searches walk the QUBS worklist."},
	"Subscription": {SupportedProfiles: []string{subs.ProfileSubscription}, Canonicals: topicCanonicals(), ConditionalCreate: true,
		Documentation: "Topic-based rest-hook subscriptions (R4 Subscriptions Backport IG): the topics are the canonical URLs in this entry's " +
			"extensions; filter criteria per docs/subscriptions.md; payload empty, id-only or full-resource; custom headers are sent and never served back."},
	"AuditEvent": {Documentation: "The audit trail (IHE BALP): every read of PHI and every change through this FHIR base."},
}

var interactionOrder = []interaction{interactionRead, interactionVRead, interactionUpdate, interactionDelete, interactionSearch, interactionCreate}

// topicCanonicals are the subscription topics, for the Subscription entry.
func topicCanonicals() []fhir.CanonicalExtension {
	out := make([]fhir.CanonicalExtension, len(subs.TopicURLs))
	for i, u := range subs.TopicURLs {
		out[i] = fhir.CanonicalExtension{URL: subs.ExtTopicCanonical, Value: u}
	}
	return out
}

// capabilities lists exactly what the served routes implement: it is read
// off the route table, type by type in table order.
func (s *Server) capabilities(base string) fhir.CapabilityConfig {
	cfg := fhir.CapabilityConfig{
		Software:            "qubs-fhir-bridge",
		Version:             s.cfg.Version,
		BaseURL:             base,
		Date:                s.started,
		SecurityDescription: securityDescription(s.cfg.AuthMode),
	}
	byType := map[string]int{}
	for _, r := range s.table {
		if r.typ == "" {
			continue
		}
		i, ok := byType[r.typ]
		if !ok {
			rc := typeDocs[r.typ]
			rc.Type = r.typ
			i = len(cfg.Resources)
			byType[r.typ] = i
			cfg.Resources = append(cfg.Resources, rc)
		}
		rc := &cfg.Resources[i]
		if r.operation != nil {
			rc.Operations = append(rc.Operations, *r.operation)
			continue
		}
		if !slices.Contains(rc.Interactions, string(r.interaction)) {
			rc.Interactions = append(rc.Interactions, string(r.interaction))
		}
		if r.search != nil && rc.Search == nil {
			rc.Search, rc.Includes, rc.RevIncludes = r.search.Params, r.search.Includes, r.search.RevIncludes
		}
	}
	for i := range cfg.Resources {
		// A stable order, whatever the table's: the one R4's own
		// examples use.
		slices.SortFunc(cfg.Resources[i].Interactions, func(a, b string) int {
			return slices.Index(interactionOrder, interaction(a)) - slices.Index(interactionOrder, interaction(b))
		})
	}
	if _, ok := byType["Subscription"]; ok {
		cfg.Instantiates = []string{subs.ServerCapability}
	}
	if s.cfg.SMART != nil {
		cfg.OAuth = &fhir.OAuthURIs{Token: s.cfg.SMARTTokenURL}
		cfg.SecurityServices = []string{"SMART-on-FHIR"}
	}
	return cfg
}

func (s *Server) metadata(c *gin.Context) error {
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domainOf(c))
	s.write(c, http.StatusOK, fhir.CapabilityStatement(s.capabilities(base)))
	return nil
}

func securityDescription(mode string) string {
	switch mode {
	case "static":
		return "Bearer tokens issued by the operator, each limited to QUBS domains and SMART v2 system scopes."
	case "jwt":
		return "Bearer JWTs from the operator's authorization server (JWKS-verified), limited to QUBS domains and SMART v2 system scopes."
	case "smart":
		return "SMART Backend Services: client_credentials with a private_key_jwt assertion (RS384/ES384) at the token endpoint; " +
			"tokens are limited to QUBS domains and SMART v2 system scopes. AuditEvent needs an AuditEvent scope."
	}
	return "No inbound authentication (BRIDGE_AUTH=none): the bridge listens on loopback only."
}
