package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// HeaderCorrelationID is the header that carries one id from the FHIR client
// through the bridge to QUBS and back.
const HeaderCorrelationID = "X-Correlation-Id"

// validCorrelationID keeps log lines and upstream headers clean: a client's
// id is reused only when it is short printable ASCII without spaces.
var validCorrelationID = regexp.MustCompile(`^[\x21-\x7e]{1,128}$`)

func newCorrelationID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// correlation takes X-Correlation-Id from the request (or makes one), puts
// it on the response and in the request context, where the QUBS client
// picks it up for every upstream call.
func (s *Server) correlation() gin.HandlerFunc {
	return func(c *gin.Context) {
		id := c.GetHeader(HeaderCorrelationID)
		if !validCorrelationID.MatchString(id) {
			id = newCorrelationID()
		}
		state(c).correlationID = id
		c.Header(HeaderCorrelationID, id)
		c.Request = c.Request.WithContext(qubs.WithCorrelationID(c.Request.Context(), id))
		c.Next()
	}
}

// recovery turns a panic into a 500 OperationOutcome that names nothing of
// the bridge's internals; the stack goes to the log, which never holds PHI
// because panics carry no request data by construction here.
func (s *Server) recovery() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			rec := recover()
			if rec == nil {
				return
			}
			if rec == http.ErrAbortHandler {
				panic(rec)
			}
			s.log.Error("panic", "correlation_id", correlationIDOf(c),
				"route", c.FullPath(), "panic_type", fmt.Sprintf("%T", rec), "stack", string(debug.Stack()))
			if c.Writer.Written() {
				c.Abort()
				return
			}
			s.renderError(c, fhir.Errorf(http.StatusInternalServerError, "exception", "internal error"))
			c.Abort()
		}()
		c.Next()
	}
}

// accessLog writes one line per request by allow-list: the route template
// (never the concrete path or query, which hold patient and study ids), the
// status, the duration and the correlation id.
func (s *Server) accessLog() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		level := slog.LevelInfo
		if c.Writer.Status() >= 500 {
			level = slog.LevelWarn
		}
		s.log.LogAttrs(c.Request.Context(), level, "request",
			slog.String("method", c.Request.Method),
			slog.String("route", route),
			slog.String("domain", c.Param("domain")),
			slog.Int("status", c.Writer.Status()),
			slog.Int("bytes", c.Writer.Size()),
			slog.Duration("duration", time.Since(start)),
			slog.String("correlation_id", correlationIDOf(c)),
		)
	}
}

// limits caps the body. A body declared too large is refused at once,
// except on FHIR routes, where declaredLength refuses it after the audit
// and authentication, so that the refusal is in the audit trail.
func (s *Server) limits() gin.HandlerFunc {
	return func(c *gin.Context) {
		if !strings.HasPrefix(c.FullPath(), fhirBasePattern+"/") && s.tooLarge(c) {
			return
		}
		if c.Request.Body != nil {
			c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBodyBytes)
		}
		c.Next()
	}
}

// declaredLength refuses, on FHIR routes, a body whose declared length is
// over the limit (a body that only turns out too long while it is read is
// refused by the MaxBytesReader of limits, inside the handler).
func (s *Server) declaredLength() gin.HandlerFunc {
	return func(c *gin.Context) {
		if !s.tooLarge(c) {
			c.Next()
		}
	}
}

// readableURL refuses, on FHIR routes, a path or query that holds a NUL
// or bytes that are not UTF-8 once decoded: no FHIR id, search parameter
// or value can (FHIR strings are Unicode, without NUL), and PostgreSQL's
// text refuses them, which would answer 500 where the client is wrong.
func (s *Server) readableURL() gin.HandlerFunc {
	return func(c *gin.Context) {
		if part := unreadable(c.Request.URL); part != "" {
			s.renderError(c, fhir.Errorf(http.StatusBadRequest, "value",
				"the request's %s holds a NUL or bytes that are not UTF-8", part))
			c.Abort()
			return
		}
		c.Next()
	}
}

// unreadable names the part of u that holds a NUL or bytes that are not
// UTF-8 once decoded ("path", "query"), or is "".
func unreadable(u *url.URL) string {
	if !readable(u.Path) {
		return "path"
	}
	raw := u.RawQuery
	plain := true // nothing escaped, all printable ASCII: the usual query
	for i := 0; i < len(raw) && plain; i++ {
		plain = raw[i] != '%' && raw[i] >= 0x20 && raw[i] < 0x7f
	}
	if plain {
		return ""
	}
	// The pairs the handlers will see: ParseQuery skips those it cannot
	// read, as c.Query does.
	q, _ := url.ParseQuery(raw)
	if !readableValues(q) {
		return "query"
	}
	return ""
}

// readableValues reports whether every name and value of q is readable:
// the query's pairs here, and a POST _search's form body, which carries
// the same parameters (searchServiceRequests).
func readableValues(q url.Values) bool {
	for k, vs := range q {
		if !readable(k) || slices.ContainsFunc(vs, func(v string) bool { return !readable(v) }) {
			return false
		}
	}
	return true
}

func readable(s string) bool { return utf8.ValidString(s) && !strings.Contains(s, "\x00") }

func (s *Server) tooLarge(c *gin.Context) bool {
	if c.Request.ContentLength <= s.cfg.MaxBodyBytes {
		return false
	}
	s.renderError(c, fhir.Errorf(http.StatusRequestEntityTooLarge, "too-costly",
		"request body of %d bytes exceeds the limit of %d bytes", c.Request.ContentLength, s.cfg.MaxBodyBytes))
	c.Abort()
	return true
}

// negotiate picks the response format before any work is done, so a client
// asking for XML learns it at once (406) rather than after QUBS calls.
func (s *Server) negotiate() gin.HandlerFunc {
	return func(c *gin.Context) {
		ct, err := fhir.Negotiate(c.GetHeader("Accept"), c.Query("_format"))
		if err != nil {
			s.renderError(c, fhir.Errorf(http.StatusNotAcceptable, "not-supported",
				"only JSON is supported (application/fhir+json or application/json); XML is not"))
			c.Abort()
			return
		}
		setContentType(c, ct)
		c.Next()
	}
}

// validDomain is what the bridge accepts as a QUBS domain in its URLs. QUBS
// documents no syntax; this keeps path injection out of upstream URLs.
var validDomain = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (s *Server) domain() gin.HandlerFunc {
	return func(c *gin.Context) {
		d := c.Param("domain")
		if !validDomain.MatchString(d) {
			s.renderError(c, fhir.Errorf(http.StatusNotFound, "not-found", "no FHIR base for this domain"))
			c.Abort()
			return
		}
		st := state(c)
		st.domain, st.route = d, s.lookupRoute(c)
		ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.RequestTimeout)
		defer cancel()
		c.Request = c.Request.WithContext(ctx)
		c.Next()
	}
}

// secureHeaders goes on every answer, errors and refusals included: nearly
// every answer can carry PHI, so none may be stored by a cache (RFC 9111
// §5.2.2.5), sniffed into another media type (a Binary served as
// text/plain must not become HTML), or framed by another site.
//
// The values are shared by every answer instead of made per request (four
// allocations): each is a slice of length and capacity 1 under its
// canonical key, so an Add or Set elsewhere makes a new one, and nothing
// here writes into a header value in place.
func secureHeaders() gin.HandlerFunc {
	values := [...]struct {
		key string
		val []string
	}{
		{"X-Content-Type-Options", []string{"nosniff"}},
		{"Cache-Control", []string{"no-store"}},
		{"Content-Security-Policy", []string{"frame-ancestors 'none'"}},
		{"X-Frame-Options", []string{"DENY"}},
	}
	return func(c *gin.Context) {
		h := c.Writer.Header()
		for _, v := range values {
			h[v.key] = v.val[:1:1]
		}
		c.Next()
	}
}

// forwardedHeaders drops the headers that describe how the client reached
// a proxy (X-Forwarded-Host, X-Forwarded-Proto, Forwarded) unless the peer
// is one of BRIDGE_TRUSTED_PROXIES. Bundle links, fullUrls and Location
// headers are built from them (fhir.BaseURL); believed from anyone, they
// would let any client point the links of an answer at a host of its
// choosing.
func (s *Server) forwardedHeaders() gin.HandlerFunc {
	trusted := parseProxies(s.cfg.TrustedProxies)
	return func(c *gin.Context) {
		if !isTrusted(trusted, c.RemoteIP()) {
			h := c.Request.Header
			h.Del("X-Forwarded-Host")
			h.Del("X-Forwarded-Proto")
			h.Del("Forwarded")
		}
		c.Next()
	}
}

// parseProxies reads addresses and CIDRs as gin's SetTrustedProxies does;
// cmd has already refused a list with a bad entry, so one is skipped here.
func parseProxies(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range list {
		if pfx, err := netip.ParsePrefix(p); err == nil {
			out = append(out, pfx.Masked())
			continue
		}
		if a, err := netip.ParseAddr(p); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	return out
}

func isTrusted(trusted []netip.Prefix, remote string) bool {
	a, err := netip.ParseAddr(remote)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
