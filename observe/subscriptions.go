package observe

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/subs"
)

// subscriptionBuckets span a notification's life from its event to the
// endpoint's 2xx: a fraction of a second when the receiver is up, up to
// the sender's longest backoff (5 min) and beyond when it was down.
var subscriptionBuckets = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600}

// subscriptionStatuses are every Subscription status, each reported (0
// when none has it) so that a status appearing is a change of value, not
// a new series.
var subscriptionStatuses = []string{store.SubscriptionRequested, store.SubscriptionActive, store.SubscriptionError, store.SubscriptionOff}

// initSubscriptions registers the sender's metrics, every type and
// outcome resolved up front.
func (m *Metrics) initSubscriptions(f factory) {
	posts := f.counterVec("bridge_subscription_notifications_total",
		"Notification posts to subscription endpoints by this process's senders, by type (handshake, heartbeat, event-notification) and outcome.",
		"type", "outcome")
	m.subscriptionPosts = map[[2]string]prometheus.Counter{}
	for _, typ := range subs.PostTypes {
		for _, o := range subs.Outcomes {
			m.subscriptionPosts[[2]string{typ, o}] = posts.WithLabelValues(typ, o)
		}
	}
	m.subscriptionLatency = f.histogram("bridge_subscription_delivery_latency_seconds",
		"Time from an event to its endpoint's acceptance of the notification carrying it, one observation per event delivered.",
		subscriptionBuckets)
}

// subscriptionObserver implements subs.Observer.
type subscriptionObserver struct{ m *Metrics }

// Subscriptions returns the observer of the notification senders
// (bridge_subscription_notifications_total and
// bridge_subscription_delivery_latency_seconds); nil when m is nil.
func Subscriptions(m *Metrics) subs.Observer {
	if m == nil {
		return nil
	}
	return subscriptionObserver{m}
}

func (o subscriptionObserver) Posted(typ, outcome string, delivered []time.Time, now time.Time) {
	if c, ok := o.m.subscriptionPosts[[2]string{typ, outcome}]; ok {
		c.Inc()
	}
	for _, at := range delivered {
		o.m.subscriptionLatency.Observe(max(0, now.Sub(at).Seconds()))
	}
}

// subscriptionCollector reads the subscriptions' figures from the store
// at each scrape, as queueCollector does the delivery queue's: all
// replicas share them.
type subscriptionCollector struct {
	stats                  func(context.Context) (*store.SubscriptionStats, error)
	now                    func() time.Time
	log                    *slog.Logger
	byStatus, depth, aging *prometheus.Desc
}

// WatchSubscriptions adds bridge_subscriptions (by status),
// bridge_subscription_outbox_depth and
// bridge_subscription_oldest_pending_age_seconds, read from stats
// (store.Subscriptions.SubscriptionStats) at each scrape, all domains
// together. A failed query is logged and leaves them out of that scrape.
// Only the first call on m takes effect.
func (m *Metrics) WatchSubscriptions(stats func(context.Context) (*store.SubscriptionStats, error), log *slog.Logger) {
	if m == nil {
		return
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	err := m.reg.Register(&subscriptionCollector{
		stats: stats, now: time.Now, log: log,
		byStatus: prometheus.NewDesc("bridge_subscriptions",
			"FHIR Subscriptions in the store, by status (requested, active, error, off).", []string{"status"}, nil),
		depth: prometheus.NewDesc("bridge_subscription_outbox_depth",
			"Notifications numbered for subscriptions and not yet accepted by their endpoints.", nil, nil),
		aging: prometheus.NewDesc("bridge_subscription_oldest_pending_age_seconds",
			"Age of the event of the oldest notification not yet accepted by its endpoint; 0 when none waits.", nil, nil),
	})
	if err != nil {
		log.Warn("metrics: the subscriptions are watched already", "error", err.Error())
	}
}

func (c *subscriptionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.byStatus
	ch <- c.depth
	ch <- c.aging
}

func (c *subscriptionCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), queueScrapeTimeout)
	defer cancel()
	st, err := c.stats(ctx)
	if err != nil {
		c.log.Warn("metrics: reading the subscriptions failed", "error", err.Error())
		return
	}
	for _, s := range subscriptionStatuses {
		ch <- prometheus.MustNewConstMetric(c.byStatus, prometheus.GaugeValue, float64(st.ByStatus[s]), s)
	}
	ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(st.Pending))
	age := 0.0
	if st.OldestPending != nil {
		age = max(0, c.now().Sub(*st.OldestPending).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(c.aging, prometheus.GaugeValue, age)
}
