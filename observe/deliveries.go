package observe

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// queueScrapeTimeout bounds the store query a scrape makes; Prometheus's
// own scrape timeout is 10 s by default.
const queueScrapeTimeout = 3 * time.Second

// queueCollector reads the delivery queue's figures from the store at each
// scrape: the queue is shared by every replica of a PostgreSQL store, so
// the figures are the database's, not this process's.
type queueCollector struct {
	stats                 func(context.Context) ([]store.DeliveryStats, error)
	now                   func() time.Time
	log                   *slog.Logger
	depth, oldest, failed *prometheus.Desc

	mu sync.Mutex
	// seen are the domains reported so far: the store lists only domains
	// with pending or failed versions, and a domain whose queue emptied
	// is reported as 0 rather than vanishing from the dashboards.
	seen map[string]bool
}

// WatchDeliveryQueue adds bridge_delivery_queue_depth,
// bridge_delivery_oldest_pending_age_seconds and bridge_delivery_failed,
// per domain, read from stats (store.Deliveries.DeliveryStats) at each
// scrape. A failed query is logged and leaves the figures out of that
// scrape rather than reporting zeros. Only the first call on m takes
// effect.
func (m *Metrics) WatchDeliveryQueue(stats func(context.Context) ([]store.DeliveryStats, error), log *slog.Logger) {
	if m == nil {
		return
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	err := m.reg.Register(&queueCollector{
		stats: stats,
		seen:  map[string]bool{},
		now:   time.Now,
		log:   log,
		depth: prometheus.NewDesc("bridge_delivery_queue_depth",
			"Report versions waiting for delivery to QUBS (pending, leased or not), by domain.", []string{"domain"}, nil),
		oldest: prometheus.NewDesc("bridge_delivery_oldest_pending_age_seconds",
			"Age of the oldest report version waiting for delivery, by domain; 0 when none waits.", []string{"domain"}, nil),
		failed: prometheus.NewDesc("bridge_delivery_failed",
			"Report versions whose delivery failed for good and that retention has not removed, by domain.", []string{"domain"}, nil),
	})
	if err != nil {
		// A second server on the same metrics: the first one's store
		// already answers for the queue.
		log.Warn("metrics: the delivery queue is watched already", "error", err.Error())
	}
}

func (q *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- q.depth
	ch <- q.oldest
	ch <- q.failed
}

func (q *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), queueScrapeTimeout)
	defer cancel()
	stats, err := q.stats(ctx)
	if err != nil {
		q.log.Warn("metrics: reading the delivery queue failed", "error", err.Error())
		return
	}
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	listed := make(map[string]bool, len(stats))
	for _, s := range stats {
		age := 0.0
		if s.OldestPending != nil {
			age = max(0, now.Sub(*s.OldestPending).Seconds())
		}
		listed[s.Domain], q.seen[s.Domain] = true, true
		q.emit(ch, s.Domain, float64(s.Pending), age, float64(s.Failed))
	}
	for d := range q.seen {
		if !listed[d] {
			q.emit(ch, d, 0, 0, 0)
		}
	}
}

func (q *queueCollector) emit(ch chan<- prometheus.Metric, domain string, depth, age, failed float64) {
	ch <- prometheus.MustNewConstMetric(q.depth, prometheus.GaugeValue, depth, domain)
	ch <- prometheus.MustNewConstMetric(q.oldest, prometheus.GaugeValue, age, domain)
	ch <- prometheus.MustNewConstMetric(q.failed, prometheus.GaugeValue, failed, domain)
}
