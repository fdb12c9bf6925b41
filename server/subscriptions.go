package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/subs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/worklist"
)

// Subscriptions (R4 Subscriptions Backport IG, topic-based, rest-hook):
// create, read, search and delete, and the IG's $status and $events.
// The subs package dispatches and sends; docs/subscriptions.md.

var subscriptionSearch = fhir.SearchSpec{
	Resource: "Subscription",
	Params: []fhir.ParamSpec{
		{Name: "status", Type: "token", Documentation: "requested, active, error or off; comma for alternatives."},
		{Name: "url", Type: "uri", Documentation: "The channel endpoint, exactly."},
	},
}

var (
	subscriptionStatusOperation = fhir.OperationCapability{
		Name: "status", Definition: subs.OperationStatus,
		Documentation: "GET [base]/Subscription/[id]/$status: a searchset Bundle of the subscription's SubscriptionStatus (Parameters, type query-status).",
	}
	subscriptionEventsOperation = fhir.OperationCapability{
		Name: "events", Definition: subs.OperationEvents,
		Documentation: "GET [base]/Subscription/[id]/$events?eventsSinceNumber=&eventsUntilNumber=&content=: past notifications " +
			"(at most 100 per call) as a history Bundle of type query-event. Notifications delivered longer ago than the retention " +
			"period are removed; asking for them by number answers 410.",
	}
)

// Limits of what a Subscription may ask for.
const (
	maxSubscriptionHeaders  = 10
	maxSubscriptionMaxCount = 100
	maxEventsPerQuery       = 100
)

// redactedHeader replaces a header's value wherever a Subscription is
// served: headers carry the receiver's credentials, which the bridge
// sends and never shows again (the IG lets a server withhold them).
const redactedHeader = "***"

type subscriptionIn struct {
	ResourceType string `json:"resourceType"`
	Status       string `json:"status"`
	End          string `json:"end"`
	Criteria     string `json:"criteria"`
	CriteriaExt  *struct {
		Extension []extensionIn `json:"extension"`
	} `json:"_criteria"`
	Channel struct {
		Extension  []extensionIn `json:"extension"`
		Type       string        `json:"type"`
		Endpoint   string        `json:"endpoint"`
		Payload    string        `json:"payload"`
		PayloadExt *struct {
			Extension []extensionIn `json:"extension"`
		} `json:"_payload"`
		Header []string `json:"header"`
	} `json:"channel"`
}

type extensionIn struct {
	URL              string `json:"url"`
	ValueString      string `json:"valueString"`
	ValueCode        string `json:"valueCode"`
	ValueUnsignedInt *int   `json:"valueUnsignedInt"`
	ValuePositiveInt *int   `json:"valuePositiveInt"`
}

func badSubscription(expr, format string, args ...any) error {
	return &fhir.Error{Status: http.StatusBadRequest, Issues: []fhir.Issue{{Severity: "error", Code: "value",
		Expression: []string{expr}, Diagnostics: fmt.Sprintf(format, args...)}}}
}

func (s *Server) createSubscription(c *gin.Context) error {
	ctx, domain := c.Request.Context(), domainOf(c)
	body, err := s.readResource(c, "Subscription")
	if err != nil {
		return err
	}
	var in subscriptionIn
	if err := json.Unmarshal(body, &in); err != nil {
		return badSubscription("Subscription", "the Subscription does not decode")
	}
	sub, err := s.parseSubscription(c, &in)
	if err != nil {
		return err
	}
	if cond := c.GetHeader("If-None-Exist"); cond != "" {
		existing, err := s.subscriptionCondition(c, cond)
		if err != nil {
			return err
		}
		if existing != nil {
			return s.respondSubscription(c, http.StatusOK, existing, "the If-None-Exist condition matched this subscription")
		}
	}
	k, err := idempotencyKeyOr(c, "")
	if err != nil {
		return err
	}
	sub.Domain, sub.ID = domain, uuid.NewString()
	if k.kind == "idempotency-key" {
		// The id follows from the key, as a DiagnosticReport's does, so a
		// retry (or two replicas racing on one) computes the same id and
		// the store lets exactly one create it.
		sub.ID = "sub-" + hashHex([]byte(domain), []byte(k.kind), []byte(k.key))[:40]
	}
	if sub.Resource, err = acceptedSubscription(body, sub.ID); err != nil {
		return err
	}
	if err := s.cfg.Store.CreateSubscription(ctx, sub); err != nil {
		if errors.Is(err, store.ErrConflict) && k.kind == "idempotency-key" {
			return s.replaySubscription(c, sub)
		}
		return err
	}
	s.kickSubscriptions()
	return s.respondSubscription(c, http.StatusCreated, sub, "subscription created; a handshake follows")
}

// replaySubscription answers a create retried with its Idempotency-Key
// with the subscription the first one made (201 again, as it is the
// original answer), or 422 when the key came with another Subscription:
// the key is the client's promise that the requests are the same.
// Headers are compared as sent (the stored resource has them redacted).
func (s *Server) replaySubscription(c *gin.Context, sub *store.Subscription) error {
	first, err := s.cfg.Store.Subscription(c.Request.Context(), sub.Domain, sub.ID)
	if errors.Is(err, store.ErrNotFound) {
		// Deleted between the create's conflict and this read.
		return fhir.Errorf(http.StatusConflict, "conflict", "the subscription this Idempotency-Key created was deleted meanwhile; retry")
	}
	if err != nil {
		return err
	}
	if !bytes.Equal(first.Resource, sub.Resource) || !slices.Equal(first.Headers, sub.Headers) {
		return fhir.Errorf(http.StatusUnprocessableEntity, "business-rule", "this Idempotency-Key was used with a different Subscription")
	}
	return s.respondSubscription(c, http.StatusCreated, first, "an earlier identical request created this subscription")
}

// respondSubscription answers a create with sub.
func (s *Server) respondSubscription(c *gin.Context, status int, sub *store.Subscription, note string) error {
	disclose(c, "Subscription/"+sub.ID, "")
	out, err := subscriptionBody(sub)
	if err != nil {
		return err
	}
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, sub.Domain)
	s.respondWrite(c, status, base+"/Subscription/"+sub.ID, 0, sub.CreatedAt, out, note)
	return nil
}

// subscriptionCondition evaluates an If-None-Exist condition as a
// Subscription search (status, url): nil for no match, the subscription
// for one, 412 for several, 400 for a condition the search does not
// understand. Like FHIR's conditional create in general it is not atomic:
// two conditional creates racing may both create (an Idempotency-Key is).
func (s *Server) subscriptionCondition(c *gin.Context, cond string) (*store.Subscription, error) {
	q, err := parseCondition(cond, subscriptionSearch, "url=https://receiver.example/hook")
	if err != nil {
		return nil, err
	}
	found, err := s.matchSubscriptions(c.Request.Context(), domainOf(c), q)
	if err != nil {
		return nil, fmt.Errorf("evaluating If-None-Exist: %w", err)
	}
	return oneMatch(found, "subscription")
}

// matchSubscriptions runs a Subscription search's parameters.
func (s *Server) matchSubscriptions(ctx context.Context, domain string, q *fhir.Query) ([]*store.Subscription, error) {
	var statuses []string
	for _, v := range q.Params["status"] {
		statuses = append(statuses, fhir.SplitValues(v)...)
	}
	list, err := s.cfg.Store.SearchSubscriptions(ctx, domain, statuses)
	if err != nil {
		return nil, err
	}
	urls := q.Params["url"]
	if len(urls) == 0 {
		return list, nil
	}
	var out []*store.Subscription
	for _, sub := range list {
		if urls[0] == sub.Endpoint {
			out = append(out, sub)
		}
	}
	return out, nil
}

// parseSubscription checks what the bridge can honour, and refuses the
// rest with 400 rather than accept a subscription it would not keep.
func (s *Server) parseSubscription(c *gin.Context, in *subscriptionIn) (*store.Subscription, error) {
	sub := &store.Subscription{Content: store.PayloadIDOnly, Timeout: subs.DefaultTimeout, MaxCount: 1}
	switch in.Status {
	case store.SubscriptionRequested, store.SubscriptionActive:
	default:
		return nil, badSubscription("Subscription.status", "a new Subscription's status must be requested (or active)")
	}
	if in.End != "" {
		return nil, &fhir.Error{Status: http.StatusBadRequest, Issues: []fhir.Issue{{Severity: "error", Code: "not-supported",
			Expression: []string{"Subscription.end"}, Diagnostics: "Subscription.end is not supported; delete the subscription instead"}}}
	}
	topic, ok := subs.Topics[in.Criteria]
	if !ok {
		return nil, badSubscription("Subscription.criteria", "unknown topic; the topics are listed in the CapabilityStatement (%s)", strings.Join(subs.TopicURLs, ", "))
	}
	sub.Topic = topic
	if in.CriteriaExt != nil {
		for _, e := range in.CriteriaExt.Extension {
			if e.URL != subs.ExtFilterCriteria {
				continue
			}
			if _, err := subs.ParseCriteria(topic, e.ValueString); err != nil {
				return nil, badSubscription("Subscription.criteria.extension", "%s", err.Error())
			}
			sub.Criteria = append(sub.Criteria, e.ValueString)
		}
	}
	ch := &in.Channel
	if ch.Type != "rest-hook" {
		return nil, &fhir.Error{Status: http.StatusBadRequest, Issues: []fhir.Issue{{Severity: "error", Code: "not-supported",
			Expression: []string{"Subscription.channel.type"}, Diagnostics: "only rest-hook channels are supported"}}}
	}
	if err := s.subscriptionPolicy().Check(c.Request.Context(), ch.Endpoint); err != nil {
		return nil, badSubscription("Subscription.channel.endpoint", "%s", err.Error())
	}
	sub.Endpoint = ch.Endpoint
	if ch.Payload != "" && ch.Payload != fhir.ContentTypeFHIRJSON {
		return nil, badSubscription("Subscription.channel.payload", "notifications are sent as %s", fhir.ContentTypeFHIRJSON)
	}
	if ch.PayloadExt != nil {
		for _, e := range ch.PayloadExt.Extension {
			if e.URL == subs.ExtPayloadContent {
				sub.Content = e.ValueCode
			}
		}
	}
	switch sub.Content {
	case store.PayloadEmpty, store.PayloadIDOnly, store.PayloadFullResource:
	default:
		return nil, badSubscription("Subscription.channel.payload.extension", "payload content must be empty, id-only or full-resource")
	}
	if ch.Payload == "" && sub.Content != store.PayloadEmpty {
		return nil, badSubscription("Subscription.channel.payload", "a payload of %s needs channel.payload %s", sub.Content, fhir.ContentTypeFHIRJSON)
	}
	if err := s.checkTopicRead(c, topic, sub.Content); err != nil {
		return nil, err
	}
	for _, e := range ch.Extension {
		switch e.URL {
		case subs.ExtHeartbeatPeriod:
			if e.ValueUnsignedInt == nil || *e.ValueUnsignedInt < 1 || *e.ValueUnsignedInt > 86400 {
				return nil, badSubscription("Subscription.channel.extension", "the heartbeat period is 1 to 86400 seconds")
			}
			sub.HeartbeatPeriod = time.Duration(*e.ValueUnsignedInt) * time.Second
		case subs.ExtTimeout:
			if e.ValueUnsignedInt == nil || *e.ValueUnsignedInt < 1 || time.Duration(*e.ValueUnsignedInt)*time.Second > subs.MaxTimeout {
				return nil, badSubscription("Subscription.channel.extension", "the timeout is 1 to %d seconds", int(subs.MaxTimeout.Seconds()))
			}
			sub.Timeout = time.Duration(*e.ValueUnsignedInt) * time.Second
		case subs.ExtMaxCount:
			if e.ValuePositiveInt == nil || *e.ValuePositiveInt > maxSubscriptionMaxCount {
				return nil, badSubscription("Subscription.channel.extension", "max count is 1 to %d", maxSubscriptionMaxCount)
			}
			sub.MaxCount = *e.ValuePositiveInt
		}
	}
	if len(ch.Header) > maxSubscriptionHeaders {
		return nil, badSubscription("Subscription.channel.header", "at most %d headers", maxSubscriptionHeaders)
	}
	for i, h := range ch.Header {
		if err := checkHeader(h); err != nil {
			return nil, badSubscription(fmt.Sprintf("Subscription.channel.header[%d]", i), "%s", err.Error())
		}
	}
	sub.Headers = ch.Header
	return sub, nil
}

// checkHeader accepts "Name: value" for a header the bridge does not set
// itself. Its errors never quote the header (it may be a credential).
func checkHeader(h string) error {
	name, value, ok := strings.Cut(h, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.TrimSpace(value) == "" || strings.ContainsAny(h, "\r\n") {
		return errors.New(`a header is "Name: value"`)
	}
	for _, r := range name {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return errors.New("the header name is not a valid HTTP token")
		}
	}
	switch textproto.CanonicalMIMEHeaderKey(name) {
	case "Host", "Content-Type", "Content-Length", "Transfer-Encoding", "Connection", "Te", "Upgrade", "Trailer":
		return errors.New("the bridge sets this header itself")
	}
	return nil
}

// checkTopicRead: a subscription that carries resources (ids or more)
// needs the caller to be allowed to read them, or it would be a way
// around the scopes.
func (s *Server) checkTopicRead(c *gin.Context, topic, content string) error {
	p := principalOf(c)
	if p == nil || content == store.PayloadEmpty {
		return nil
	}
	typ := map[string]string{store.EventTopicWorklist: "ServiceRequest", store.EventTopicReportDelivery: "DiagnosticReport",
		store.EventTopicComments: "Communication"}[topic]
	if err := p.Check(typ, 'r'); err != nil {
		return fhir.Errorf(http.StatusForbidden, "forbidden", "a %s payload of this topic needs read permission on %s", content, typ)
	}
	return nil
}

// acceptedSubscription is the stored form of a new Subscription: the id
// set, headers redacted, status and error left for serving to fill.
func acceptedSubscription(body []byte, id string) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	m["id"] = id
	delete(m, "status")
	delete(m, "error")
	delete(m, "meta")
	if ch, ok := m["channel"].(map[string]any); ok {
		if hs, ok := ch["header"].([]any); ok {
			for i, h := range hs {
				name, _, _ := strings.Cut(fmt.Sprint(h), ":")
				hs[i] = strings.TrimSpace(name) + ": " + redactedHeader
			}
		}
	}
	return json.Marshal(m)
}

// subscriptionBody is a Subscription as served: the accepted resource
// with the current status, the last error, and the IG's profile.
func subscriptionBody(sub *store.Subscription) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(sub.Resource, &m); err != nil {
		return nil, fmt.Errorf("decoding a stored subscription: %w", err)
	}
	m["status"] = sub.Status
	m["meta"] = map[string]any{"profile": []string{subs.ProfileSubscription}}
	if sub.Error != "" {
		m["error"] = sub.Error
	}
	return json.Marshal(m)
}

func (s *Server) subscription(c *gin.Context) (*store.Subscription, error) {
	sub, err := s.cfg.Store.Subscription(c.Request.Context(), domainOf(c), c.Param("id"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fhir.Errorf(http.StatusNotFound, "not-found", "Subscription/%s is not known", c.Param("id"))
	}
	return sub, err
}

func (s *Server) readSubscription(c *gin.Context) error {
	sub, err := s.subscription(c)
	if err != nil {
		return err
	}
	b, err := subscriptionBody(sub)
	if err != nil {
		return err
	}
	s.writeRaw(c, http.StatusOK, b)
	return nil
}

func (s *Server) searchSubscriptions(c *gin.Context) error {
	q, err := fhir.ParseSearch(c.Request.URL.Query(), c.GetHeader("Prefer"), subscriptionSearch, defaultCount, maxCount)
	if err != nil {
		return err
	}
	list, err := s.matchSubscriptions(c.Request.Context(), domainOf(c), q)
	if err != nil {
		return err
	}
	bundle, base := s.searchBundle(c, "Subscription", q)
	for _, sub := range list {
		b, err := subscriptionBody(sub)
		if err != nil {
			return err
		}
		bundle.AddMatch(base+"/Subscription/"+sub.ID, b)
	}
	bundle.SetTotal(len(list))
	s.writeBundle(c, http.StatusOK, bundle)
	return nil
}

func (s *Server) deleteSubscription(c *gin.Context) error {
	err := s.cfg.Store.DeleteSubscription(c.Request.Context(), domainOf(c), c.Param("id"))
	if errors.Is(err, store.ErrNotFound) {
		return fhir.Errorf(http.StatusNotFound, "not-found", "Subscription/%s is not known", c.Param("id"))
	}
	if err != nil {
		return err
	}
	c.Status(http.StatusNoContent)
	return nil
}

// subscriptionStatus is $status: a searchset Bundle holding the
// subscription's SubscriptionStatus (R4: Parameters).
func (s *Server) subscriptionStatus(c *gin.Context) error {
	sub, err := s.subscription(c)
	if err != nil {
		return err
	}
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domainOf(c))
	st, err := json.Marshal(subs.StatusOf(base, sub, subs.TypeQueryStatus, nil))
	if err != nil {
		return err
	}
	b := fhir.NewSearchset(nil)
	b.SetLink("self", base+"/Subscription/"+sub.ID+"/$status")
	b.AddMatch("urn:uuid:"+uuid.NewString(), st)
	b.SetTotal(1)
	s.writeBundle(c, http.StatusOK, b)
	return nil
}

// subscriptionEvents is $events: the notifications numbered
// eventsSinceNumber to eventsUntilNumber (the last 100 by default), as a
// history Bundle of type query-event, payload as the subscription's or as
// content asks.
func (s *Server) subscriptionEvents(c *gin.Context) error {
	sub, err := s.subscription(c)
	if err != nil {
		return err
	}
	num := func(name string, def int64) (int64, error) {
		v := c.Query(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return 0, fhir.Errorf(http.StatusBadRequest, "value", "%s must be a positive integer", name)
		}
		return n, nil
	}
	until, err := num("eventsUntilNumber", sub.EventsSinceStart)
	if err != nil {
		return err
	}
	// By default the last 100 the bridge still holds; numbers asked for
	// by name that retention removed are a 410, so a client catching up
	// knows they are gone rather than reading an empty range as "none".
	since, err := num("eventsSinceNumber", max(1, until-maxEventsPerQuery+1, sub.PrunedThrough+1))
	if err != nil {
		return err
	}
	if p := sub.PrunedThrough; p > 0 && ((c.Query("eventsSinceNumber") != "" && since <= p) || (c.Query("eventsUntilNumber") != "" && until <= p)) {
		return fhir.Errorf(http.StatusGone, "deleted", "event numbers 1 to %d were delivered and then removed under the retention policy; "+
			"the oldest the bridge holds is %d", p, p+1)
	}
	if content := c.Query("content"); content != "" {
		switch content {
		case store.PayloadEmpty, store.PayloadIDOnly, store.PayloadFullResource:
		default:
			return fhir.Errorf(http.StatusBadRequest, "value", "content must be empty, id-only or full-resource")
		}
		if err := s.checkTopicRead(c, sub.Topic, content); err != nil {
			return err
		}
		sub.Content = content
	}
	notes, err := s.cfg.Store.Notifications(c.Request.Context(), sub.Domain, sub.ID, since, until, maxEventsPerQuery)
	if err != nil {
		return err
	}
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domainOf(c))
	b, err := subs.NotificationBundle(c.Request.Context(), base, sub, subs.TypeQueryEvent, notes, time.Now(), s.NotificationFocus(func(string) string { return base }))
	if err != nil {
		return err
	}
	for _, n := range notes {
		disclose(c, n.Event.FocusType+"/"+n.Event.FocusID, "")
	}
	s.write(c, http.StatusOK, b)
	return nil
}

// NotificationFocus resolves the focus of events that kept no resource
// as the bridge serves it under base(domain): the DiagnosticReport of a
// report-delivery event, with its delivery state now.
func (s *Server) NotificationFocus(base func(domain string) string) subs.Resolver {
	return func(ctx context.Context, domain string, ev *store.Event) ([]byte, error) {
		if ev.FocusType != "DiagnosticReport" || s.cfg.Store == nil {
			return nil, nil
		}
		r, err := s.cfg.Store.Report(ctx, domain, ev.FocusID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if r.Purged {
			return nil, nil
		}
		return reportBody(r, base(domain))
	}
}

func (s *Server) subscriptionPolicy() *subs.Policy {
	if s.cfg.SubscriptionPolicy != nil {
		return s.cfg.SubscriptionPolicy
	}
	return &subs.Policy{}
}

func (s *Server) kickSubscriptions() {
	if s.cfg.SubscriptionKick != nil {
		s.cfg.SubscriptionKick()
	}
}

// commentEvent records, with its comments-topic event, a comment the
// bridge created in QUBS, through the comment watch's memory: the watch
// polling the study later finds it seen and tells nothing, and a replay
// of the create (QUBS answers the same comment) appends nothing. QUBS
// accepted the comment already, so a failure here is logged, not
// answered: the comment exists whatever the log says.
func (s *Server) commentEvent(c *gin.Context, appointmentID string, cm *qubs.Comment, id string, resource []byte) {
	if s.cfg.Store == nil || cm.GUID == "" {
		return
	}
	ev := &store.Event{FocusType: "Communication", FocusID: id, AppointmentID: appointmentID, Resource: resource}
	_, err := s.cfg.Store.RecordComments(c.Request.Context(), domainOf(c), "", 0, appointmentID,
		[]store.PolledComment{{GUID: cm.GUID, Modified: worklist.CommentModified(*cm), Event: ev}}, time.Now())
	if err != nil {
		s.log.Error("recording a comment event", "err", err)
	}
}
