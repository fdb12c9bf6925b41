package server

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe"
)

// RateLimit is the per-client request budget: Rate requests a second on
// average, bursts of up to Burst. A zero Rate disables limiting.
type RateLimit struct {
	Rate  float64
	Burst int
}

// clientLimiters keeps one token bucket per client. Buckets idle for
// longer than it takes to refill are dropped, so the map stays as small
// as the set of active clients.
type clientLimiters struct {
	limit RateLimit
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newClientLimiters(l RateLimit) *clientLimiters {
	return &clientLimiters{limit: l, now: time.Now, buckets: map[string]*bucket{}}
}

// allow takes one token for client; when there is none it returns how
// long until there will be.
func (c *clientLimiters) allow(client string) (bool, time.Duration) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	idle := time.Duration(float64(c.limit.Burst)/c.limit.Rate*float64(time.Second)) + time.Minute
	if now.Sub(c.swept) > idle {
		for k, b := range c.buckets {
			if now.Sub(b.seen) > idle {
				delete(c.buckets, k)
			}
		}
		c.swept = now
	}
	b, ok := c.buckets[client]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(rate.Limit(c.limit.Rate), c.limit.Burst)}
		c.buckets[client] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// rateLimit answers 429 with Retry-After once a client has spent its
// budget. The client is the authenticated principal when there is one,
// else the remote address.
func (s *Server) rateLimit() gin.HandlerFunc {
	return func(c *gin.Context) {
		client := clientOf(c)
		if client == "" {
			client = "ip:" + c.ClientIP()
		}
		if s.throttled(c, client) {
			return
		}
		c.Next()
	}
}

// throttled spends one request of client's budget and, when there is none
// left, answers 429 with Retry-After. Refused requests are charged too
// (per address, by authenticate), so guessing credentials is throttled.
func (s *Server) throttled(c *gin.Context, client string) bool {
	if s.limiters == nil {
		return false
	}
	ok, wait := s.limiters.allow(client)
	if ok {
		return false
	}
	s.cfg.Metrics.Refused(observe.RefusedClient)
	c.Header("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	s.renderError(c, fhir.Errorf(http.StatusTooManyRequests, "throttled", "too many requests from this client; retry later"))
	c.Abort()
	return true
}
