package auth

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/time/rate"
)

// Defaults of the JWKS cache.
const (
	// DefaultJWKSRefreshInterval is the least time between two fetches
	// triggered by an unknown kid. Anyone can send a token with a made-up
	// kid, so without this limit every such request would make us fetch.
	DefaultJWKSRefreshInterval = time.Minute
	// DefaultJWKSMaxAge is how long fetched keys are used before a
	// refetch, so that revoked keys disappear even if no new kid shows up.
	DefaultJWKSMaxAge = time.Hour
	// jwksFetchTimeout bounds one fetch; the request that triggered it
	// waits at most this long.
	jwksFetchTimeout = 10 * time.Second
	// maxJWKSBytes bounds the JWKS document we read.
	maxJWKSBytes = 1 << 20
	// minRSABits refuses RSA keys too short to trust (NIST SP 800-131A).
	minRSABits = 2048
)

var errUnknownKid = errors.New("no key with this kid")

// jwksCache holds the public signing keys published at one JWKS URL. It
// fetches lazily, refetches when the keys are older than maxAge, and on an
// unknown kid refetches once per minInterval, or at once for a kid never
// seen before within a small budget (mayRefresh); concurrent requests
// share one fetch. When a fetch fails the keys it had are kept, so a short
// outage of the authorization server does not lock every client out.
type jwksCache struct {
	url         string
	client      *http.Client
	now         func() time.Time
	minInterval time.Duration
	maxAge      time.Duration

	fetchMu sync.Mutex // serialises fetches

	mu          sync.Mutex
	keys        []jose.JSONWebKey
	fetched     time.Time // last successful fetch
	lastAttempt time.Time // last fetch, successful or not
	attempted   bool
	fetches     int
	// missed remembers kids that were looked for and not found, so that
	// each new kid triggers at most one early refetch; newKids bounds
	// how many such early refetches happen at all (see mayRefresh).
	missed  map[string]bool
	newKids *rate.Limiter
}

// Early refetches for new kids: a burst of this many, then one per refresh
// interval; the memory of missed kids is cleared when it grows past
// maxMissedKids, which only costs an early refetch or two.
const (
	newKidBurst   = 3
	maxMissedKids = 1024
)

func newJWKSCache(rawURL string, client *http.Client, now func() time.Time, minInterval, maxAge time.Duration) (*jwksCache, error) {
	if err := checkKeyURL(rawURL); err != nil {
		return nil, err
	}
	if client == nil {
		client = &http.Client{Timeout: jwksFetchTimeout}
	}
	if minInterval <= 0 {
		minInterval = DefaultJWKSRefreshInterval
	}
	if maxAge <= 0 {
		maxAge = DefaultJWKSMaxAge
	}
	return &jwksCache{url: rawURL, client: client, now: now, minInterval: minInterval, maxAge: maxAge,
		missed: map[string]bool{}, newKids: rate.NewLimiter(rate.Every(minInterval), newKidBurst)}, nil
}

// checkKeyURL requires https for key URLs: keys fetched over plain HTTP
// could be replaced by anyone on the path. Plain http is accepted for
// loopback only, for tests and sidecars.
func checkKeyURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("key set URL %q: not an absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
	}
	return fmt.Errorf("key set URL %q: must be https (http only on loopback)", raw)
}

// candidates returns the keys that may have signed a token with this kid.
// An unknown kid triggers a rate-limited refetch. A token without kid is
// checked against all keys (the set is small), without refetching.
func (c *jwksCache) candidates(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	keys, stale, known := c.lookup(kid)
	if known && !stale {
		return keys, nil
	}
	if ok, seq := c.mayRefresh(kid, stale); ok {
		c.refresh(ctx, seq)
		keys, _, known = c.lookup(kid)
	}
	if !known {
		return nil, errUnknownKid
	}
	return keys, nil
}

func (c *jwksCache) lookup(kid string) (keys []jose.JSONWebKey, stale, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stale = !c.attempted || c.now().Sub(c.fetched) > c.maxAge && c.now().Sub(c.lastAttempt) >= c.minInterval
	for _, k := range c.keys {
		if kid == "" || k.KeyID == kid {
			keys = append(keys, k)
		}
	}
	return keys, stale, len(keys) > 0
}

// mayRefresh decides whether a lookup that failed (or found stale keys)
// may fetch the key set now, and returns the fetch count it decided on, so
// that refresh can tell whether another goroutine fetched meanwhile.
//
// The rule: once per refresh interval for anything; and besides that, at
// once for a kid never seen before, within a small budget. A kid nobody has
// seen is most likely a key its owner rotated a moment ago, and SMART
// Backend Services clients expect it to work straight away (SMART BDT
// Auth-21); a made-up kid costs one fetch, once, and the budget
// (newKidBurst, then one per interval) stops a flood of made-up kids from
// making the bridge hammer the key server.
func (c *jwksCache) mayRefresh(kid string, stale bool) (bool, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if stale || !c.attempted || now.Sub(c.lastAttempt) >= c.minInterval {
		return true, c.fetches
	}
	if kid == "" || c.missed[kid] {
		return false, 0
	}
	if len(c.missed) >= maxMissedKids {
		clear(c.missed)
	}
	c.missed[kid] = true
	return c.newKids.AllowN(now, 1), c.fetches
}

// refresh fetches the key set unless another goroutine fetched it since
// the caller decided to (seq is the fetch count it saw then): concurrent
// requests with the same unknown kid share one fetch.
func (c *jwksCache) refresh(ctx context.Context, seq int) {
	c.fetchMu.Lock()
	defer c.fetchMu.Unlock()
	c.mu.Lock()
	again := c.fetches != seq
	c.mu.Unlock()
	if again {
		return
	}
	c.mu.Lock()
	c.attempted = true
	c.lastAttempt = c.now()
	c.fetches++
	c.mu.Unlock()

	// The fetch outlives a client that hangs up: it is rate limited, so an
	// aborted fetch would lock out the next legitimate request too.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jwksFetchTimeout)
	defer cancel()
	keys, err := fetchJWKS(ctx, c.client, c.url)
	if err != nil {
		return // keep the old keys; the next attempt comes after minInterval
	}
	c.mu.Lock()
	c.keys = keys
	c.fetched = c.now()
	c.mu.Unlock()
}

func fetchJWKS(ctx context.Context, client *http.Client, url string) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS %s: HTTP %d", url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS %s: larger than %d bytes", url, maxJWKSBytes)
	}
	return parseJWKS(body)
}

// parseJWKS keeps the usable public signing keys of a JWK Set and skips
// the rest one by one, so that one key of a type we do not know does not
// take the whole set down. Symmetric keys are dropped: a JWKS is public,
// and a "secret" from it would let anyone forge HMAC tokens. Private keys
// published by mistake are reduced to their public half.
func parseJWKS(data []byte) ([]jose.JSONWebKey, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, r := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(r); err != nil {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if !k.IsPublic() {
			k = k.Public()
		}
		if !k.Valid() || k.Key == nil {
			continue // symmetric keys end here: Public() of an oct key is empty
		}
		if rk, ok := k.Key.(*rsa.PublicKey); ok && rk.N.BitLen() < minRSABits {
			continue
		}
		keys = append(keys, k)
	}
	if len(raw.Keys) > 0 && len(keys) == 0 {
		return nil, fmt.Errorf("JWKS: no usable public signing key")
	}
	return keys, nil
}

// fetchCount is the number of fetches tried, for tests.
func (c *jwksCache) fetchCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fetches
}
