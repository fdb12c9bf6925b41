package subs

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// resolver plays DNS for names under .test.
func resolver(m map[string]string) func(context.Context, string) ([]netip.Addr, error) {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		a, ok := m[host]
		if !ok {
			return nil, errors.New("no such host")
		}
		return []netip.Addr{netip.MustParseAddr(a)}, nil
	}
}

func TestPolicyCheck(t *testing.T) {
	ctx := context.Background()
	dns := resolver(map[string]string{"public.test": "93.184.216.34", "internal.test": "10.1.2.3", "six.test": "2606:4700::1111"})
	strict := &Policy{Lookup: dns}
	refused := map[string]string{
		"http to a public host":    "http://public.test/hook",
		"not absolute":             "/hook",
		"ftp":                      "ftp://public.test/hook",
		"credentials in the URL":   "https://user:pw@public.test/hook",
		"does not resolve":         "https://nowhere.test/hook",
		"name to private":          "https://internal.test/hook",
		"private 10/8":             "https://10.0.0.1/hook",
		"private 172.16/12":        "https://172.16.5.4/hook",
		"private 192.168/16":       "https://192.168.1.1/hook",
		"loopback":                 "https://127.0.0.1/hook",
		"loopback v6":              "https://[::1]/hook",
		"link-local (metadata)":    "https://169.254.169.254/latest/meta-data",
		"link-local v6":            "https://[fe80::1]/hook",
		"unique local v6":          "https://[fd00::1]/hook",
		"multicast":                "https://224.0.0.1/hook",
		"unspecified":              "https://0.0.0.0/hook",
		"unspecified v6":           "https://[::]/hook",
		"shared (CGNAT)":           "https://100.64.0.1/hook",
		"v4-mapped loopback":       "https://[::ffff:127.0.0.1]/hook",
		"broadcast":                "https://255.255.255.255/hook",
		"this network":             "https://0.1.2.3/hook",
		"benchmarking":             "https://198.18.0.1/hook",
		"NAT64 to internal":        "https://[64:ff9b::a00:1]/hook",
		"fragment":                 "https://public.test/hook#x",
		"an opaque URL":            "https:public.test",
		"http to loopback (no ok)": "http://127.0.0.1:8080/hook",
	}
	for name, u := range refused {
		err := strict.Check(ctx, u)
		assert.ErrorIs(t, err, ErrRefused, name)
		if err != nil {
			assert.NotContains(t, err.Error(), u, "errors do not echo the endpoint")
		}
	}
	for _, u := range []string{"https://public.test/hook", "https://93.184.216.34:8443/x?y=1", "https://six.test/hook"} {
		assert.NoError(t, strict.Check(ctx, u), u)
	}

	// The loopback exception: http and https to loopback only.
	lo := &Policy{AllowLoopback: true, Lookup: dns}
	assert.NoError(t, lo.Check(ctx, "http://127.0.0.1:9000/hook"))
	assert.NoError(t, lo.Check(ctx, "https://[::1]:9000/hook"))
	assert.ErrorIs(t, lo.Check(ctx, "http://public.test/hook"), ErrRefused)
	assert.ErrorIs(t, lo.Check(ctx, "https://10.0.0.1/hook"), ErrRefused)

	// The allow-list opens ranges, https still required.
	nets, err := ParseNets("10.0.0.0/8, fd00::/8")
	require.NoError(t, err)
	allow := &Policy{AllowNets: nets, Lookup: dns}
	assert.NoError(t, allow.Check(ctx, "https://internal.test/hook"))
	assert.NoError(t, allow.Check(ctx, "https://[fd00::1]/hook"))
	assert.ErrorIs(t, allow.Check(ctx, "http://internal.test/hook"), ErrRefused)
	assert.ErrorIs(t, allow.Check(ctx, "https://192.168.1.1/hook"), ErrRefused)
	_, err = ParseNets("10.0.0.0/8,nonsense")
	assert.Error(t, err)
}

// TestPolicyDial: the address dialled is checked, so a name that passed
// at create and resolves to loopback now (DNS rebinding) is refused at
// connect, and a redirect is never followed.
func TestPolicyDial(t *testing.T) {
	var hits atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer target.Close()
	port := target.Listener.Addr().(*net.TCPAddr).Port

	var calls atomic.Int64
	rebind := func(_ context.Context, host string) ([]netip.Addr, error) {
		if calls.Add(1) == 1 {
			return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	p := &Policy{Lookup: rebind}
	u := "http://rebind.test:" + strconv.Itoa(port) + "/hook"
	// The check at create sees the public answer (https, as required);
	// the dial, to the plain-http test server, sees loopback.
	require.NoError(t, p.Check(context.Background(), strings.Replace(u, "http:", "https:", 1)))
	_, err := p.Client().Post(u, "application/fhir+json", strings.NewReader("{}"))
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrRefused)
	assert.Zero(t, hits.Load(), "nothing reached the internal server")

	// Redirects are answers, not followed.
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/elsewhere", http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	res, err := (&Policy{AllowLoopback: true}).Client().Post(redirector.URL, "application/fhir+json", strings.NewReader("{}"))
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusTemporaryRedirect, res.StatusCode)
	assert.Zero(t, hits.Load(), "the redirect was not followed")

	// Without the loopback exception the dial itself is refused, even
	// to a literal address.
	_, err = (&Policy{}).Client().Post(target.URL, "application/fhir+json", strings.NewReader("{}"))
	assert.ErrorIs(t, err, ErrRefused)
	assert.Zero(t, hits.Load())
}
