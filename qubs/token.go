package qubs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// tokenExpiryDelta is how long before its expiry a token is renewed, so
// that a request never leaves with a token that dies on the way. It plays
// the part of oauth2.ReuseTokenSource's expiry delta (10s there); a minute
// leaves room for clock skew between us and QUBS.
const tokenExpiryDelta = time.Minute

// tokenFetchTimeout bounds one token request. The fetch is shared by every
// caller waiting for a token, so it runs on its own deadline rather than on
// the context of whichever caller happened to start it.
const tokenFetchTimeout = 30 * time.Second

// tokenCache holds the access token shared by all calls of a Client. It is
// what oauth2.ReuseTokenSource would be if that could be told to drop a
// token QUBS refused (a 401) and if waiting callers could give up on their
// own context: at most one fetch is in flight, every caller that needs a
// token waits for it, and a token is renewed tokenExpiryDelta before its
// expiry.
//
// QUBS also issues refresh tokens; they are not used. The documentation
// allows a new client-credentials grant at any time, which is one request
// either way and has no refresh-token state to lose.
type tokenCache struct {
	cc        *clientcredentials.Config
	hc        *http.Client
	now       func() time.Time
	expiresIn time.Duration // the expiry delta
	// fetched, when set, is told of each fetch's outcome.
	fetched func(error)

	mu     sync.Mutex
	tok    *oauth2.Token
	gen    uint64 // identifies tok; bumped by every fetched token
	flight *tokenFlight
}

type tokenFlight struct {
	done chan struct{}
	tok  *oauth2.Token
	gen  uint64
	err  *Error
}

func (tc *tokenCache) fresh(t *oauth2.Token) bool {
	if t == nil || t.AccessToken == "" {
		return false
	}
	// A token without expires_in lives until QUBS refuses it with a 401.
	return t.Expiry.IsZero() || tc.now().Add(tc.expiresIn).Before(t.Expiry)
}

// get returns a valid token and its generation, fetching one when needed.
func (tc *tokenCache) get(ctx context.Context) (*oauth2.Token, uint64, error) {
	tc.mu.Lock()
	if tc.fresh(tc.tok) {
		t, g := tc.tok, tc.gen
		tc.mu.Unlock()
		return t, g, nil
	}
	f := tc.flight
	if f == nil {
		f = &tokenFlight{done: make(chan struct{})}
		tc.flight = f
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenFetchTimeout)
		go func() {
			defer cancel()
			tc.fetch(fctx, f)
		}()
	}
	tc.mu.Unlock()
	select {
	case <-f.done:
		if f.err != nil {
			e := *f.err // each caller gets its own copy to annotate
			return nil, 0, &e
		}
		return f.tok, f.gen, nil
	case <-ctx.Done():
		return nil, 0, &Error{Kind: KindTransient, Err: fmt.Errorf("waiting for an access token: %w", ctx.Err())}
	}
}

func (tc *tokenCache) fetch(ctx context.Context, f *tokenFlight) {
	tok, err := tc.cc.Token(context.WithValue(ctx, oauth2.HTTPClient, tc.hc))
	if tc.fetched != nil {
		tc.fetched(err)
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if err != nil {
		f.err = tokenError(err)
	} else {
		tc.gen++
		tc.tok, f.tok, f.gen = tok, tok, tc.gen
	}
	tc.flight = nil
	close(f.done)
}

// invalidate drops the token of generation gen after QUBS refused it. A
// newer token is kept: when many calls fail with the same token at once,
// only the first one's report causes a fetch.
func (tc *tokenCache) invalidate(gen uint64) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.gen == gen {
		tc.tok = nil
	}
}

// tokenError classifies a failed token request. The token endpoint's body
// is never kept: only the status and the RFC 6749 error code, which are
// safe to log.
func tokenError(err error) *Error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		e := &Error{Kind: KindUnauthorized, Status: status}
		code := re.ErrorCode
		if code == "" {
			code = "no error code"
		}
		e.Err = fmt.Errorf("token endpoint refused the request: HTTP %d, %s", status, code)
		// 400/401 (invalid_client, invalid_grant, unauthorized_client) and
		// other 4xx mean the credentials will not work as configured; 429,
		// 408 and 5xx may pass.
		if retryableStatus(status) {
			e.Kind = KindTransient
			e.Err = fmt.Errorf("token endpoint failed: HTTP %d", status)
		}
		return e
	}
	// Transport errors, timeouts, and answers that are not a token (not
	// JSON, no access_token: a proxy answered) may all pass on a retry.
	return &Error{Kind: KindTransient, Err: fmt.Errorf("token request: %w", stripURL(err))}
}
