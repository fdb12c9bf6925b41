package subs

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// Criteria is one parsed filter criteria string
// ("ServiceRequest?modality=CT&priority=stat"): every test must pass (FHIR
// AND between parameters), each test passing when any of its values does
// (OR within a comma list).
type Criteria struct {
	Type  string
	tests []test
}

type test func(r *focus) bool

// focus is what criteria look at: the event and, for worklist events, the
// ServiceRequest it carries (the fields the worklist parameters search).
type focus struct {
	ev *store.Event
	sr *serviceRequest
}

type coding struct {
	System  string `json:"system"`
	Code    string `json:"code"`
	Display string `json:"display"`
}

type concept struct {
	Coding []coding `json:"coding"`
	Text   string   `json:"text"`
}

type reference struct {
	Reference string `json:"reference"`
}

type identifier struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type serviceRequest struct {
	ID                 string       `json:"id"`
	Status             string       `json:"status"`
	Priority           string       `json:"priority"`
	Code               *concept     `json:"code"`
	OrderDetail        []concept    `json:"orderDetail"`
	Identifier         []identifier `json:"identifier"`
	Subject            reference    `json:"subject"`
	Requester          *reference   `json:"requester"`
	Performer          []reference  `json:"performer"`
	OccurrenceDateTime string       `json:"occurrenceDateTime"`
	OccurrencePeriod   *struct {
		Start string `json:"start"`
	} `json:"occurrencePeriod"`
}

// worklistParams are the ServiceRequest search parameters a worklist
// subscription may filter on, each turning one parameter's values into a
// test. A modifier the parameter does not take is refused.
var worklistParams = map[string]func(mod string, values []string) (test, error){
	"modality":   tokenParam(func(sr *serviceRequest) []coding { return dcmCodings(sr) }),
	"priority":   tokenParam(func(sr *serviceRequest) []coding { return []coding{{Code: sr.Priority}} }),
	"status":     tokenParam(func(sr *serviceRequest) []coding { return []coding{{Code: sr.Status}} }),
	"code":       codeParam,
	"identifier": tokenParam(identifierCodings),
	"_id":        tokenParam(func(sr *serviceRequest) []coding { return []coding{{Code: sr.ID}} }),
	"patient":    refParam("Patient", func(sr *serviceRequest) []reference { return []reference{sr.Subject} }),
	"subject":    refParam("Patient", func(sr *serviceRequest) []reference { return []reference{sr.Subject} }),
	"requester": refParam("Practitioner", func(sr *serviceRequest) []reference {
		if sr.Requester == nil {
			return nil
		}
		return []reference{*sr.Requester}
	}),
	"performer":  refParam("Practitioner", func(sr *serviceRequest) []reference { return sr.Performer }),
	"occurrence": occurrenceParam,
}

// topicResource is the resource type each topic's criteria name, and
// what else they may filter on besides the worklist's parameters.
var topicResource = map[string]string{
	store.EventTopicWorklist:       "ServiceRequest",
	store.EventTopicReportDelivery: "DiagnosticReport",
	store.EventTopicComments:       "Communication",
}

// ParseCriteria parses one filter criteria string of topic, refusing what
// cannot be evaluated (the error says why, PHI-free: it names parameters,
// never values).
func ParseCriteria(topic, s string) (*Criteria, error) {
	typ, query, _ := strings.Cut(s, "?")
	want := topicResource[topic]
	if typ != want {
		return nil, fmt.Errorf("filter criteria of this topic must start with %s?", want)
	}
	values, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("filter criteria are not a valid query string")
	}
	c := &Criteria{Type: typ}
	for key, vs := range values {
		name, mod, _ := strings.Cut(key, ":")
		var mk func(string, []string) (test, error)
		if typ == "ServiceRequest" {
			mk = worklistParams[name]
		} else if name == "based-on" {
			mk = basedOnParam
		}
		if mk == nil {
			return nil, fmt.Errorf("filter parameter %q is not supported for %s", name, typ)
		}
		for _, v := range vs {
			alts := fhir.SplitValues(v)
			if len(alts) == 0 || slices.Contains(alts, "") {
				return nil, fmt.Errorf("filter parameter %q has no value", name)
			}
			t, err := mk(mod, alts)
			if err != nil {
				return nil, fmt.Errorf("filter parameter %q: %w", key, err)
			}
			c.tests = append(c.tests, t)
		}
	}
	return c, nil
}

func (c *Criteria) matches(f *focus) bool {
	if f.sr == nil && c.Type == "ServiceRequest" && len(c.tests) > 0 {
		return false // nothing to test: the event kept no ServiceRequest
	}
	for _, t := range c.tests {
		if !t(f) {
			return false
		}
	}
	return true
}

// tokenParam is a token parameter over the codings get finds:
// "code" matches any system, "system|code" one system, "|code" none.
func tokenParam(get func(*serviceRequest) []coding) func(string, []string) (test, error) {
	return func(mod string, values []string) (test, error) {
		if mod != "" && mod != "not" {
			return nil, fmt.Errorf("modifier :%s is not supported", mod)
		}
		return func(f *focus) bool {
			hit := false
			for _, v := range values {
				for _, c := range get(f.sr) {
					if tokenMatches(v, c) {
						hit = true
					}
				}
			}
			return hit != (mod == "not")
		}, nil
	}
}

func tokenMatches(v string, c coding) bool {
	if c.Code == "" {
		return false
	}
	system, code, hasSystem := strings.Cut(v, "|")
	if !hasSystem {
		return strings.EqualFold(v, c.Code)
	}
	return system == c.System && strings.EqualFold(code, c.Code)
}

func dcmCodings(sr *serviceRequest) []coding {
	var out []coding
	for _, od := range sr.OrderDetail {
		for _, c := range od.Coding {
			if c.System == mapping.SystemDICOM {
				out = append(out, c)
			}
		}
	}
	return out
}

func identifierCodings(sr *serviceRequest) []coding {
	out := make([]coding, 0, len(sr.Identifier))
	for _, id := range sr.Identifier {
		out = append(out, coding{System: id.System, Code: id.Value})
	}
	return out
}

// codeParam is ServiceRequest.code: a token, or :text matching the text
// and displays case-insensitively.
func codeParam(mod string, values []string) (test, error) {
	if mod != "text" {
		return tokenParam(func(sr *serviceRequest) []coding {
			if sr.Code == nil {
				return nil
			}
			return sr.Code.Coding
		})(mod, values)
	}
	return func(f *focus) bool {
		if f.sr.Code == nil {
			return false
		}
		texts := []string{f.sr.Code.Text}
		for _, c := range f.sr.Code.Coding {
			texts = append(texts, c.Display)
		}
		for _, v := range values {
			for _, t := range texts {
				if t != "" && strings.Contains(strings.ToLower(t), strings.ToLower(v)) {
					return true
				}
			}
		}
		return false
	}, nil
}

// refParam is a reference parameter: "Type/id" or a bare id of type;
// :missing=true|false tests presence.
func refParam(typ string, get func(*serviceRequest) []reference) func(string, []string) (test, error) {
	return func(mod string, values []string) (test, error) {
		switch mod {
		case "missing":
			if len(values) != 1 || (values[0] != "true" && values[0] != "false") {
				return nil, fmt.Errorf(":missing takes true or false")
			}
			want := values[0] == "true"
			return func(f *focus) bool {
				present := false
				for _, r := range get(f.sr) {
					present = present || r.Reference != ""
				}
				return present != want
			}, nil
		case "":
		default:
			return nil, fmt.Errorf("modifier :%s is not supported", mod)
		}
		refs := make([]string, len(values))
		for i, v := range values {
			if !strings.Contains(v, "/") {
				v = typ + "/" + v
			}
			refs[i] = v
		}
		return func(f *focus) bool {
			for _, r := range get(f.sr) {
				for _, want := range refs {
					if r.Reference == want || strings.HasSuffix(r.Reference, "/"+want) {
						return true
					}
				}
			}
			return false
		}, nil
	}
}

// occurrenceParam is a date parameter on the occurrence's start, values
// without a zone in UTC.
func occurrenceParam(mod string, values []string) (test, error) {
	if mod != "" {
		return nil, fmt.Errorf("modifier :%s is not supported", mod)
	}
	type window struct{ since, until time.Time }
	var ws []window
	for _, v := range values {
		d, err := fhir.ParseDateParam(v, time.UTC)
		if err != nil {
			return nil, fmt.Errorf("not a date: use [prefix]YYYY-MM-DD[Thh:mm[:ss][zone]]")
		}
		var w window
		if err := d.Narrow(&w.since, &w.until); err != nil {
			return nil, fmt.Errorf("prefix %s is not supported; use eq, ge, gt, le or lt", d.Prefix)
		}
		ws = append(ws, w)
	}
	return func(f *focus) bool {
		s := f.sr.OccurrenceDateTime
		if s == "" && f.sr.OccurrencePeriod != nil {
			s = f.sr.OccurrencePeriod.Start
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return false
		}
		for _, w := range ws {
			if (w.since.IsZero() || !t.Before(w.since)) && (w.until.IsZero() || t.Before(w.until)) {
				return true
			}
		}
		return false
	}, nil
}

// basedOnParam is based-on=ServiceRequest/[id] for the report-delivery
// and comments topics: the study the report or comment is about.
func basedOnParam(mod string, values []string) (test, error) {
	if mod != "" {
		return nil, fmt.Errorf("modifier :%s is not supported", mod)
	}
	ids := make([]string, len(values))
	for i, v := range values {
		ids[i] = strings.TrimPrefix(v, "ServiceRequest/")
	}
	return func(f *focus) bool {
		id, err := mapping.ServiceRequestID(f.ev.AppointmentID)
		if err != nil {
			return false
		}
		for _, want := range ids {
			if want == id {
				return true
			}
		}
		return false
	}, nil
}

// Matcher evaluates subscriptions' criteria against events, for
// store.DispatchEvents. Criteria are parsed once and kept; the event's
// ServiceRequest is decoded once per event however many subscriptions
// look at it.
type Matcher struct {
	mu       sync.Mutex
	parsed   map[string]*Criteria
	lastSeq  int64
	lastFocs *focus
}

// NewMatcher makes an empty Matcher.
func NewMatcher() *Matcher { return &Matcher{parsed: map[string]*Criteria{}} }

// Match is a store.Matcher.
func (m *Matcher) Match(ev *store.Event, sub *store.Subscription) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.parsed) > 10000 {
		m.parsed = map[string]*Criteria{} // subscriptions come and go
	}
	f := m.focusOf(ev)
	for _, s := range sub.Criteria {
		c, ok := m.parsed[sub.Topic+" "+s]
		if !ok {
			var err error
			if c, err = ParseCriteria(sub.Topic, s); err != nil {
				return false // refused at create; a later release may read it otherwise
			}
			m.parsed[sub.Topic+" "+s] = c
		}
		if !c.matches(f) {
			return false
		}
	}
	return true
}

func (m *Matcher) focusOf(ev *store.Event) *focus {
	if m.lastFocs != nil && m.lastSeq == ev.Seq && ev.Seq != 0 {
		return m.lastFocs
	}
	f := &focus{ev: ev}
	if ev.FocusType == "ServiceRequest" && len(ev.Resource) > 0 {
		var sr serviceRequest
		if json.Unmarshal(ev.Resource, &sr) == nil {
			f.sr = &sr
		}
	}
	m.lastSeq, m.lastFocs = ev.Seq, f
	return f
}
