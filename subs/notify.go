package subs

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// The Backport IG's canonical URLs.
const (
	IG = "http://hl7.org/fhir/uv/subscriptions-backport/"

	ProfileSubscription     = IG + "StructureDefinition/backport-subscription"
	ProfileStatus           = IG + "StructureDefinition/backport-subscription-status-r4"
	ProfileNotification     = IG + "StructureDefinition/backport-subscription-notification-r4"
	ExtFilterCriteria       = IG + "StructureDefinition/backport-filter-criteria"
	ExtPayloadContent       = IG + "StructureDefinition/backport-payload-content"
	ExtHeartbeatPeriod      = IG + "StructureDefinition/backport-heartbeat-period"
	ExtTimeout              = IG + "StructureDefinition/backport-timeout"
	ExtMaxCount             = IG + "StructureDefinition/backport-max-count"
	ExtTopicCanonical       = IG + "StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
	ServerCapability        = IG + "CapabilityStatement/backport-subscription-server-r4"
	OperationStatus         = IG + "OperationDefinition/backport-subscription-status"
	OperationEvents         = IG + "OperationDefinition/backport-subscription-events"
	subscriptionErrorSystem = "http://terminology.hl7.org/CodeSystem/subscription-error"
)

// Topics are the bridge's subscription topics: canonical URL (what
// Subscription.criteria names) → event topic.
var Topics = map[string]string{
	mapping.Base + "SubscriptionTopic/worklist":        store.EventTopicWorklist,
	mapping.Base + "SubscriptionTopic/report-delivery": store.EventTopicReportDelivery,
	mapping.Base + "SubscriptionTopic/comments":        store.EventTopicComments,
}

// TopicURLs are the canonical URLs in a fixed order, for the
// CapabilityStatement.
var TopicURLs = []string{
	mapping.Base + "SubscriptionTopic/worklist",
	mapping.Base + "SubscriptionTopic/report-delivery",
	mapping.Base + "SubscriptionTopic/comments",
}

// TopicURL is the canonical URL of an event topic.
func TopicURL(topic string) string {
	for url, t := range Topics {
		if t == topic {
			return url
		}
	}
	return ""
}

// Notification types (the IG's notification-type code system).
const (
	TypeHandshake   = "handshake"
	TypeHeartbeat   = "heartbeat"
	TypeEvent       = "event-notification"
	TypeQueryStatus = "query-status"
	TypeQueryEvent  = "query-event"
)

// Param is one Parameters.parameter of a SubscriptionStatus.
type Param struct {
	Name                 string         `json:"name"`
	ValueReference       *Ref           `json:"valueReference,omitempty"`
	ValueCanonical       string         `json:"valueCanonical,omitempty"`
	ValueCode            string         `json:"valueCode,omitempty"`
	ValueString          string         `json:"valueString,omitempty"`
	ValueInstant         string         `json:"valueInstant,omitempty"`
	ValueCodeableConcept *CodeableValue `json:"valueCodeableConcept,omitempty"`
	Part                 []Param        `json:"part,omitempty"`
}

// Ref is a FHIR Reference.
type Ref struct {
	Reference string `json:"reference"`
}

// CodeableValue is a CodeableConcept of one coding and a text.
type CodeableValue struct {
	Coding []Coding `json:"coding,omitempty"`
	Text   string   `json:"text,omitempty"`
}

// Coding is a FHIR Coding.
type Coding struct {
	System string `json:"system"`
	Code   string `json:"code"`
}

// Status is a SubscriptionStatus in R4: a Parameters resource.
type Status struct {
	ResourceType string  `json:"resourceType"`
	ID           string  `json:"id,omitempty"`
	Meta         Meta    `json:"meta"`
	Parameter    []Param `json:"parameter"`
}

// Meta holds profiles.
type Meta struct {
	Profile []string `json:"profile,omitempty"`
}

// Bundle is a notification or operation Bundle.
type Bundle struct {
	ResourceType string  `json:"resourceType"`
	ID           string  `json:"id,omitempty"`
	Meta         *Meta   `json:"meta,omitempty"`
	Type         string  `json:"type"`
	Timestamp    string  `json:"timestamp,omitempty"`
	Total        *int    `json:"total,omitempty"`
	Entry        []Entry `json:"entry"`
}

// Entry is a Bundle entry.
type Entry struct {
	FullURL  string          `json:"fullUrl,omitempty"`
	Resource json.RawMessage `json:"resource,omitempty"`
	Search   *EntrySearch    `json:"search,omitempty"`
	Request  *EntryRequest   `json:"request,omitempty"`
	Response *EntryResponse  `json:"response,omitempty"`
}

// EntrySearch is Bundle.entry.search.
type EntrySearch struct {
	Mode string `json:"mode"`
}

// EntryRequest is Bundle.entry.request.
type EntryRequest struct {
	Method string `json:"method"`
	URL    string `json:"url"`
}

// EntryResponse is Bundle.entry.response.
type EntryResponse struct {
	Status string `json:"status"`
}

// StatusOf builds a subscription's SubscriptionStatus of type typ with
// the notifications notes (focus per the subscription's content). base
// is the FHIR base of the subscription's domain ("" for relative
// references).
func StatusOf(base string, sub *store.Subscription, typ string, notes []store.Notification) Status {
	st := Status{ResourceType: "Parameters", Meta: Meta{Profile: []string{ProfileStatus}}, Parameter: []Param{
		{Name: "subscription", ValueReference: &Ref{Reference: join(base, "Subscription/"+sub.ID)}},
		{Name: "topic", ValueCanonical: TopicURL(sub.Topic)},
		{Name: "status", ValueCode: sub.Status},
		{Name: "type", ValueCode: typ},
		{Name: "events-since-subscription-start", ValueString: strconv.FormatInt(sub.EventsSinceStart, 10)},
	}}
	for _, n := range notes {
		p := Param{Name: "notification-event", Part: []Param{
			{Name: "event-number", ValueString: strconv.FormatInt(n.EventNumber, 10)},
			{Name: "timestamp", ValueInstant: instant(n.Event.At)},
		}}
		if sub.Content != store.PayloadEmpty {
			p.Part = append(p.Part, Param{Name: "focus", ValueReference: &Ref{Reference: join(base, n.Event.FocusType+"/"+n.Event.FocusID)}})
		}
		st.Parameter = append(st.Parameter, p)
	}
	if sub.Error != "" {
		st.Parameter = append(st.Parameter, Param{Name: "error", ValueCodeableConcept: &CodeableValue{
			Coding: []Coding{{System: subscriptionErrorSystem, Code: "no-response"}}, Text: sub.Error}})
	}
	return st
}

// Resolver returns the focus resource of a notification as the bridge
// serves it now, for full-resource payloads of events that kept none
// (report-delivery: the DiagnosticReport with its delivery state). nil
// and no error when there is none to give.
type Resolver func(ctx context.Context, domain string, ev *store.Event) ([]byte, error)

// NotificationBundle builds the history Bundle a rest-hook receiver is
// sent: the SubscriptionStatus first, then one entry per notification's
// focus (none for content empty; the reference alone for id-only; the
// resource too for full-resource, from the event or resolve).
func NotificationBundle(ctx context.Context, base string, sub *store.Subscription, typ string, notes []store.Notification, now time.Time, resolve Resolver) (*Bundle, error) {
	st, err := json.Marshal(StatusOf(base, sub, typ, notes))
	if err != nil {
		return nil, err
	}
	b := &Bundle{ResourceType: "Bundle", ID: newUUID(), Meta: &Meta{Profile: []string{ProfileNotification}}, Type: "history",
		Timestamp: instant(now), Entry: []Entry{{
			FullURL: "urn:uuid:" + newUUID(), Resource: st,
			Request:  &EntryRequest{Method: "GET", URL: "Subscription/" + sub.ID + "/$status"},
			Response: &EntryResponse{Status: "200"},
		}}}
	if sub.Content == store.PayloadEmpty {
		return b, nil
	}
	for i := range notes {
		ev := &notes[i].Event
		e := Entry{FullURL: join(base, ev.FocusType+"/"+ev.FocusID),
			Request:  &EntryRequest{Method: method(ev.Kind), URL: ev.FocusType + "/" + ev.FocusID},
			Response: &EntryResponse{Status: status(ev.Kind)}}
		if sub.Content == store.PayloadFullResource && ev.Kind != store.EventLeft {
			res := ev.Resource
			if res == nil && resolve != nil {
				if res, err = resolve(ctx, sub.Domain, ev); err != nil {
					return nil, fmt.Errorf("resolving %s: %w", ev.FocusType, err)
				}
			}
			e.Resource = res
		}
		b.Entry = append(b.Entry, e)
	}
	return b, nil
}

// method is the history entry's request method for an event kind: what
// the change was, in REST terms.
func method(kind string) string {
	switch kind {
	case store.EventArrived, store.EventCreated:
		return "POST"
	case store.EventLeft:
		return "DELETE"
	}
	return "PUT"
}

func status(kind string) string {
	switch kind {
	case store.EventArrived, store.EventCreated:
		return "201"
	case store.EventLeft:
		return "204"
	}
	return "200"
}

func join(base, rel string) string {
	if base == "" {
		return rel
	}
	return base + "/" + rel
}

func instant(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00") }

func newUUID() string { return uuid.NewString() }
