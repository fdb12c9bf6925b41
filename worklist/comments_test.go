package worklist

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// TestCommentStudiesWanted: only the studies comments subscriptions can
// match are polled when every one of them names its studies; any one
// without based-on makes every study wanted; other topics do not count.
func TestCommentStudiesWanted(t *testing.T) {
	sub := func(topic string, criteria ...string) *store.Subscription {
		return &store.Subscription{Topic: topic, Criteria: criteria}
	}
	tests := []struct {
		name    string
		subs    []*store.Subscription
		only    []string
		watched bool
	}{
		{"none", nil, nil, false},
		{"other topics", []*store.Subscription{sub(store.EventTopicWorklist), sub(store.EventTopicReportDelivery)}, nil, false},
		{"unfiltered", []*store.Subscription{sub(store.EventTopicComments)}, nil, true},
		{"named", []*store.Subscription{
			sub(store.EventTopicComments, "Communication?based-on=ServiceRequest/a,ServiceRequest/b"),
			sub(store.EventTopicComments, "Communication?based-on=c"),
		}, []string{"a", "b", "c"}, true},
		{"one unfiltered among named", []*store.Subscription{
			sub(store.EventTopicComments, "Communication?based-on=ServiceRequest/a"),
			sub(store.EventTopicComments),
		}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			only, watched := commentStudiesWanted(tt.subs)
			assert.Equal(t, tt.only, only)
			assert.Equal(t, tt.watched, watched)
		})
	}
}
