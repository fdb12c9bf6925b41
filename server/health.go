package server

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// healthz answers while the process is up; it checks nothing else so an
// orchestrator does not restart the bridge because QUBS is down.
func (s *Server) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// readyz answers 200 only when a QUBS token can be obtained and the store
// answers, so a load balancer sends no traffic to a replica that cannot
// reach either.
func (s *Server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 10*time.Second)
	defer cancel()
	checks := gin.H{}
	status := http.StatusOK
	if err := s.cfg.QUBS.Token(ctx); err != nil {
		checks["qubs"] = "unavailable"
		status = http.StatusServiceUnavailable
		s.log.Warn("readiness: no QUBS token", "correlation_id", correlationIDOf(c), "error", err.Error())
	} else {
		checks["qubs"] = "ok"
	}
	if s.cfg.Store != nil {
		if err := s.cfg.Store.Ping(ctx); err != nil {
			checks["store"] = "unavailable"
			status = http.StatusServiceUnavailable
			s.log.Warn("readiness: store unavailable", "correlation_id", correlationIDOf(c), "error", err.Error())
		} else {
			checks["store"] = "ok"
			// Informational: a queue that only grows means QUBS refuses
			// or is unreachable; it does not make the replica unready.
			if n, err := s.cfg.Store.PendingDeliveries(ctx); err == nil {
				checks["deliveries_pending"] = n
			}
			// Informational too: records waiting for the audit writer; a
			// full buffer makes requests wait (docs/store.md).
			checks["audit_pending"] = s.auditor.backlog()
		}
	}
	state := "ok"
	if status != http.StatusOK {
		state = "unavailable"
	}
	c.JSON(status, gin.H{"status": state, "checks": checks})
}
