package qubssim

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultClientID and DefaultClientSecret are the credentials of the client
// registered when Options.Clients is nil. That client may use every domain.
const (
	DefaultClientID     = "qubs-sim-client"
	DefaultClientSecret = "qubs-sim-secret"
)

// Lifetimes from the QUBS documentation ("Token lifetimes", "Keys are
// retained for ...", "uploadUrlExpiresAtUtc").
const (
	defaultTokenTTL   = 60 * time.Minute
	refreshTokenTTL   = 5 * 24 * time.Hour
	idemTTLLong       = 24 * time.Hour   // comments and reports
	idemTTLUpload     = 15 * time.Minute // report attachment upload URLs
	uploadURLTTL      = 15 * time.Minute
	defaultURLTTLSecs = 900
	minURLTTLSecs     = 60
	maxURLTTLSecs     = 3600
)

// Options configure a Sim. The zero value is a usable simulator.
type Options struct {
	// Seed makes the generated data deterministic; 0 means 1.
	Seed int64
	// Appointments is the total number of PENDING REPORTING appointments
	// across the seeded domains; 0 means 1200. Most go to "acme".
	Appointments int
	// Clients are the registered OAuth clients; nil means one client with
	// DefaultClientID and DefaultClientSecret allowed on every domain.
	Clients []Client
	// Clock judges every expiry (tokens, idempotency keys, presigned URLs);
	// nil means real time.
	Clock Clock
	// DateSkew, when not 0, shifts the Date header of every answer from the
	// wall clock by this much: a QUBS whose clock disagrees with the
	// bridge's (the check command compares the two).
	DateSkew time.Duration
	// TokenTTL is the access (and ID) token lifetime; 0 means the
	// documented 60 minutes.
	TokenTTL time.Duration
	// PublicURL is the absolute base of presigned URLs, e.g.
	// "http://127.0.0.1:8081"; "" means derive it from each request.
	PublicURL string
	// Logger receives one line per request (method, route, status, ids);
	// nil means discard. Nothing logged holds PHI or tokens.
	Logger *slog.Logger
	// ChurnRate is how many churn events (a study arriving on, leaving or
	// changing on the pending worklist) happen per second of the Clock;
	// 0 means none. See churn.go; tests drive churn with ChurnStep.
	ChurnRate float64
	// UsedUploadURL is what a second PUT to a presigned upload URL that
	// already took one answers. QUBS does not document it; the zero value
	// is UsedUploadConflict (409), the simulator's historical behaviour.
	UsedUploadURL UsedUploadURL
}

// UsedUploadURL is how the store behind presigned upload URLs answers a PUT
// to a URL that already received a successful one. QUBS's documentation
// says only that URLs "are intended for a single successful PUT", so each
// plausible store behaviour is available, and the bridge is tested against
// all three.
type UsedUploadURL int

// Second-PUT behaviours.
const (
	// UsedUploadConflict answers 409 UploadAlreadyCompleted; the content
	// is unchanged.
	UsedUploadConflict UsedUploadURL = iota
	// UsedUploadOverwrite accepts the PUT (200) and replaces the content,
	// as a plain S3 presigned PUT does until the URL expires.
	UsedUploadOverwrite
	// UsedUploadForbidden answers 403 AccessDenied, as a store that makes
	// presigned URLs single-use does; the content is unchanged.
	UsedUploadForbidden
)

// String returns the setting's name as ParseUsedUploadURL reads it.
func (u UsedUploadURL) String() string {
	switch u {
	case UsedUploadConflict:
		return "conflict"
	case UsedUploadOverwrite:
		return "overwrite"
	case UsedUploadForbidden:
		return "forbidden"
	}
	return fmt.Sprintf("UsedUploadURL(%d)", int(u))
}

// UsedUploadURLs are the settings, in order, for tests that run each.
var UsedUploadURLs = []UsedUploadURL{UsedUploadConflict, UsedUploadOverwrite, UsedUploadForbidden}

// ParseUsedUploadURL reads "conflict", "overwrite" or "forbidden" (also
// "409", "200" and "403"); "" is conflict.
func ParseUsedUploadURL(s string) (UsedUploadURL, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "conflict", "409":
		return UsedUploadConflict, nil
	case "overwrite", "200":
		return UsedUploadOverwrite, nil
	case "forbidden", "403":
		return UsedUploadForbidden, nil
	}
	return 0, fmt.Errorf("second-PUT behaviour %q: want conflict, overwrite or forbidden", s)
}

// Client is a registered OAuth client and the domains its tokens may use.
type Client struct {
	ID     string
	Secret string
	// Domains are the domains the client's tokens may use; requests
	// elsewhere are 403.
	Domains []string
}

// Clock tells the simulator the time, so tests can move it.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// FakeClock is a Clock that only moves when told to. It is safe for
// concurrent use.
type FakeClock struct {
	mu sync.Mutex
	t  time.Time
}

// NewFakeClock returns a FakeClock showing t.
func NewFakeClock(t time.Time) *FakeClock { return &FakeClock{t: t} }

// Now returns the clock's current time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d (backwards when d is negative).
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Sim is the QUBS simulator. It is an http.Handler and safe for concurrent
// use; create it with New.
type Sim struct {
	clock     Clock
	log       *slog.Logger
	publicURL string
	tokenTTL  time.Duration
	usedPut   UsedUploadURL
	dateSkew  time.Duration

	mux   *http.ServeMux
	admin *http.ServeMux

	jwtKey   []byte      // HS256 key of access and ID tokens, random per Sim
	aead     cipher.AEAD // seals nextTokens and presigned URL tokens, random per Sim
	orderKey []byte      // keys the paging order; derived from Seed so walks are reproducible

	reqPrefix string
	reqSeq    atomic.Uint64

	mu      sync.Mutex
	rng     *mrand.Rand // GUIDs of created records; deterministic per Seed and request order
	domains map[string]*domainData
	clients map[string]*clientReg
	refresh map[string]refreshGrant
	idem    map[string]*idemEntry
	faults  []*faultState
	churn   *churnState

	// recMu guards the request logs. It is separate from mu because a
	// request is logged the moment its status is written, which must never
	// wait for (or deadlock on) the data lock.
	recMu     sync.Mutex
	requests  []RequestRecord
	tokenReqs []TokenRequest
}

// clientReg is a registered client; all means "every domain, including ones
// added later by PutAppointment" (the default client).
type clientReg struct {
	Client
	all bool
}

// maxRecords bounds the request and token-request logs of a long-running
// simulator (the demo); the oldest half is dropped when it is reached.
const maxRecords = 100_000

// New returns a simulator seeded from opts.
func New(opts Options) *Sim {
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.Appointments <= 0 {
		opts.Appointments = 1200
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = defaultTokenTTL
	}
	s := &Sim{
		clock:     opts.Clock,
		log:       opts.Logger,
		publicURL: strings.TrimRight(opts.PublicURL, "/"),
		tokenTTL:  opts.TokenTTL,
		usedPut:   opts.UsedUploadURL,
		dateSkew:  opts.DateSkew,
		jwtKey:    randomBytes(32),
		reqPrefix: hex.EncodeToString(randomBytes(4)),
		rng:       mrand.New(mrand.NewPCG(uint64(opts.Seed), 0x5eed5eed)),
		domains:   map[string]*domainData{},
		clients:   map[string]*clientReg{},
		refresh:   map[string]refreshGrant{},
		idem:      map[string]*idemEntry{},
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	block, err := aes.NewCipher(randomBytes(32))
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	s.aead, err = cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	s.orderKey = []byte(fmt.Sprintf("qubssim-order-%d", opts.Seed))

	seed(s, opts.Seed, opts.Appointments)
	s.churn = newChurn(s, opts.Seed, max(opts.ChurnRate, 0))

	if opts.Clients == nil {
		s.clients[DefaultClientID] = &clientReg{Client: Client{ID: DefaultClientID, Secret: DefaultClientSecret}, all: true}
	}
	for _, c := range opts.Clients {
		c.Domains = append([]string(nil), c.Domains...)
		s.clients[c.ID] = &clientReg{Client: c}
	}
	s.routes()
	return s
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails since Go 1.24
	return b
}

// Domains returns the simulator's domains, sorted. With the seeded data the
// first one is "acme".
func (s *Sim) Domains() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.domains))
	for d := range s.domains {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// reqInfo travels in the request context from ServeHTTP to the handlers.
type reqInfo struct {
	id       string
	corr     string
	replayed bool
}

type reqInfoKey struct{}

func info(r *http.Request) *reqInfo {
	if ri, ok := r.Context().Value(reqInfoKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{}
}

// ServeHTTP serves the QUBS API, the token endpoint, the presigned URLs and
// the admin endpoints.
//
// Order matters: the correlation id is set first so that every answer,
// faults included, carries it; faults come before routing so a fault can
// stand in for any route; the request is recorded last, with the status the
// client actually saw.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ri := &reqInfo{id: s.newRequestID(), corr: r.Header.Get("X-Correlation-Id")}
	if !validCorrelationID(ri.corr) {
		// An absent (or unusable) id is generated, in the format of the
		// documentation's example (16 hex digits).
		ri.corr = hex.EncodeToString(randomBytes(8))
	}
	w.Header().Set("X-Correlation-Id", ri.corr)
	if s.dateSkew != 0 {
		// net/http keeps a Date the handler set.
		w.Header().Set("Date", time.Now().Add(s.dateSkew).UTC().Format(http.TimeFormat))
	}
	r = r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, ri))

	if strings.HasPrefix(r.URL.Path, "/_sim/") {
		// Admin endpoints are neither recorded nor subject to faults, so
		// inspecting the simulator never changes what it shows.
		s.admin.ServeHTTP(w, r)
		return
	}

	// The worklist moves before the request sees it.
	s.catchUp()

	_, route := s.mux.Handler(r)
	rec := RequestRecord{
		Method:         r.Method,
		Route:          route,
		Path:           r.URL.Path,
		IdempotencyKey: r.Header.Get("Idempotency-Key"),
		CorrelationID:  ri.corr,
		RequestID:      ri.id,
		TraceParent:    r.Header.Get("Traceparent"),
		At:             s.clock.Now(),
	}
	// The record is written when the status is committed, before any byte
	// reaches the client, so whoever sees an answer also sees its record;
	// a request that gets no answer is recorded with status 0.
	recorded := false
	record := func(status int) {
		if recorded {
			return
		}
		recorded = true
		rec.Status, rec.Replayed = status, ri.replayed
		s.addRequest(rec)
	}
	sw := &statusWriter{ResponseWriter: w, onStatus: record}
	defer func() {
		record(0)
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "qubssim request",
			slog.String("method", r.Method), slog.String("route", route),
			slog.Int("status", sw.status), slog.Bool("fault", rec.Fault),
			slog.Bool("replayed", ri.replayed), slog.String("requestId", ri.id),
			slog.String("correlationId", ri.corr), slog.Duration("took", time.Since(start)))
	}()

	f := s.takeFault(r)
	if f == nil {
		s.dispatch(sw, r, route)
		return
	}
	rec.Fault = true
	if f.Latency > 0 {
		bufferBody(r)
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // the client gave up; nobody hears an answer
		}
	}
	if !f.Drop && f.Status == 0 {
		s.dispatch(sw, r, route) // latency only
		return
	}
	if f.AfterHandling {
		// Run the real handler into a buffer: its effects are committed,
		// its answer is lost.
		bw := &bufferWriter{header: http.Header{}}
		s.dispatch(bw, r, route)
		rec.HandledStatus = bw.status
	}
	if f.Drop {
		record(0)
		dropConnection(sw)
		return
	}
	if f.RetryAfter != "" {
		sw.Header().Set("Retry-After", f.RetryAfter)
	}
	s.problem(sw, r, f.Status, "fault injected by the simulator")
}

// dispatch routes r, answering unknown routes and wrong methods with
// problems rather than ServeMux's plain-text defaults.
func (s *Sim) dispatch(w http.ResponseWriter, r *http.Request, route string) {
	if route != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, p := s.mux.Handler(r2); p != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) == 0 {
		s.problem(w, r, http.StatusNotFound, "no such route")
		return
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	s.problem(w, r, http.StatusMethodNotAllowed, "method not allowed on this route")
}

func validCorrelationID(id string) bool {
	if id == "" || len(id) > 200 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

func (s *Sim) newRequestID() string {
	return fmt.Sprintf("%s-%08x", s.reqPrefix, s.reqSeq.Add(1))
}

func (s *Sim) addRequest(rec RequestRecord) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if len(s.requests) >= maxRecords {
		s.requests = append(s.requests[:0:0], s.requests[maxRecords/2:]...)
	}
	s.requests = append(s.requests, rec)
}

// statusWriter remembers the status sent to the client and reports it
// once, before it is sent.
type statusWriter struct {
	http.ResponseWriter
	status   int
	onStatus func(int)
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
		w.onStatus(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (Hijack).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bufferWriter swallows the answer of a handler whose response is "lost".
type bufferWriter struct {
	header http.Header
	status int
}

func (w *bufferWriter) Header() http.Header { return w.header }
func (w *bufferWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *bufferWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(b), nil
}

// dropConnection closes the connection without an answer. Where the
// connection cannot be hijacked (HTTP/2), aborting the handler has the same
// effect for the client.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		_ = conn.Close()
		return
	}
	panic(http.ErrAbortHandler)
}

// Server is a Sim listening on a real socket.
type Server struct {
	*Sim
	// URL is the base URL, e.g. "http://127.0.0.1:41234", without a
	// trailing slash. The API base, the token endpoint and presigned URLs
	// are all under it.
	URL string

	srv  *http.Server
	done chan struct{}
	err  error
}

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves a new
// Sim. Unless opts.PublicURL is set, presigned URLs use the server's URL.
func Start(addr string, opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("qubssim.Start(%q): %w", addr, err)
	}
	url := "http://" + ln.Addr().String()
	if opts.PublicURL == "" {
		opts.PublicURL = url
	}
	s := &Server{Sim: New(opts), URL: url, done: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           s.Sim,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          nil,
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s, nil
}

// TokenURL returns the OAuth2 token endpoint, URL + "/oauth2/token".
func (s *Server) TokenURL() string { return s.URL + "/oauth2/token" }

// Close stops the server at once, closing open connections.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	if err == nil {
		err = s.err
	}
	return err
}

// bufferBody reads a request body of known, bounded size into memory.
// net/http notices that a client went away only once the body has been
// read to its end, so without this a delayed POST would never see its
// client give up.
func bufferBody(r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength < 0 || r.ContentLength > maxPostBody {
		return
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return // the handler will meet the same error
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
}

// readAllLimited reads at most limit bytes of r and reports whether there
// was more.
func readAllLimited(r io.Reader, limit int64) ([]byte, bool, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, false, err
	}
	if int64(len(b)) > limit {
		return nil, true, nil
	}
	return b, false, nil
}
