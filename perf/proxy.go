package perf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// ProxyCommand is the hidden argument of "qubs-fhir-bridge bench" that
// runs the bare proxy the bridge is compared with.
const ProxyCommand = "proxy"

// proxyReady is what the proxy prints once it listens.
const proxyReady = "bench proxy listening on "

// NewProxy is the bare reverse proxy: every request goes unchanged to
// QUBS at target with a bearer token the proxy holds, obtained and
// refreshed with the client credentials as the bridge does. It is the
// least a layer in front of QUBS can do, so its cost is the floor the
// bridge is measured against.
func NewProxy(ctx context.Context, target *url.URL, tokenURL, clientID, clientSecret string) http.Handler {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// As the bridge's QUBS client (qubs.defaultHTTPClient): without it 16
	// clients would reopen connections to QUBS all the time.
	t.MaxIdleConnsPerHost = 16
	cc := clientcredentials.Config{ClientID: clientID, ClientSecret: clientSecret, TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams}
	ts := cc.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Transport: t}))
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
		},
		Transport: &oauth2.Transport{Source: ts, Base: t},
	}
}

// ServeProxy runs NewProxy on listen until ctx is done, after printing
// its URL to out.
func ServeProxy(ctx context.Context, listen, qubsURL, tokenURL, clientID, clientSecret string, out io.Writer) error {
	target, err := url.Parse(qubsURL)
	if err != nil || target.Scheme == "" || target.Host == "" {
		return fmt.Errorf("bench proxy: QUBS URL %q is not an absolute URL", qubsURL)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("bench proxy: listening on %s: %w", listen, err)
	}
	srv := &http.Server{Handler: NewProxy(ctx, target, tokenURL, clientID, clientSecret), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintln(out, proxyReady+"http://"+ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("bench proxy: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("bench proxy: shutdown: %w", err)
	}
	return nil
}
