package subs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Policy decides which endpoints a Subscription may name, so that a
// subscription is no server-side request forgery tool: https only (http
// only to loopback, when the bridge itself listens on loopback), and no
// address in a private, loopback, link-local, multicast, shared or
// unspecified range unless AllowNets lets it. It is applied when a
// subscription is created (Check) and again on every connection
// (Transport), to the address actually dialled, so a name that resolves
// to a public address at create and to an internal one later (DNS
// rebinding) is refused then.
type Policy struct {
	// AllowLoopback is set when the bridge listens on loopback (the demo,
	// a developer's machine): loopback endpoints are allowed, over http
	// too.
	AllowLoopback bool
	// AllowNets are ranges allowed although internal
	// (BRIDGE_SUBSCRIPTION_ALLOW_NETS).
	AllowNets []netip.Prefix
	// Lookup resolves a host; nil means the system resolver. Tests set it
	// to play DNS.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

// ErrRefused is the error of an endpoint or address the policy refuses.
var ErrRefused = errors.New("refused by the subscription endpoint policy")

// ParseNets parses a comma-separated list of CIDR ranges.
func ParseNets(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR range", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// internal are the ranges besides what netip classifies that no
// subscription may reach by default: shared address space (RFC 6598),
// benchmarking (RFC 2544), IETF protocol assignments, and "this network".
var internal = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
}

// allowed says whether the policy lets a connection go to a.
func (p *Policy) allowed(a netip.Addr) error {
	a = a.Unmap()
	for _, n := range p.AllowNets {
		if n.Contains(a) {
			return nil
		}
	}
	if a.IsLoopback() {
		if p.AllowLoopback {
			return nil
		}
		return fmt.Errorf("%w: a loopback address", ErrRefused)
	}
	switch {
	case a.IsPrivate():
		return fmt.Errorf("%w: a private address", ErrRefused)
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		return fmt.Errorf("%w: a link-local address", ErrRefused)
	case a.IsMulticast(), a.IsInterfaceLocalMulticast():
		return fmt.Errorf("%w: a multicast address", ErrRefused)
	case a.IsUnspecified():
		return fmt.Errorf("%w: an unspecified address", ErrRefused)
	case !a.IsGlobalUnicast():
		return fmt.Errorf("%w: not a global unicast address", ErrRefused)
	}
	for _, n := range internal {
		if n.Contains(a) {
			return fmt.Errorf("%w: a reserved address", ErrRefused)
		}
	}
	return nil
}

func (p *Policy) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{a}, nil
	}
	if p.Lookup != nil {
		return p.Lookup(ctx, host)
	}
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// Check refuses an endpoint the policy does not allow: not an absolute
// https URL (or http to loopback under AllowLoopback), with user info, or
// with a host that does not resolve or resolves to any refused address.
// Its errors say why without echoing the URL.
func (p *Policy) Check(ctx context.Context, endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%w: not an absolute URL", ErrRefused)
	}
	if u.User != nil {
		return fmt.Errorf("%w: credentials in the URL; send them as a channel header", ErrRefused)
	}
	if u.Fragment != "" {
		return fmt.Errorf("%w: a fragment", ErrRefused)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("%w: only https endpoints", ErrRefused)
	}
	addrs, err := p.lookup(ctx, u.Hostname())
	if err != nil || len(addrs) == 0 {
		return fmt.Errorf("%w: the host does not resolve", ErrRefused)
	}
	for _, a := range addrs {
		if err := p.allowed(a); err != nil {
			return err
		}
		if u.Scheme == "http" && !(p.AllowLoopback && a.Unmap().IsLoopback()) {
			return fmt.Errorf("%w: only https endpoints (http only to loopback when the bridge listens on loopback)", ErrRefused)
		}
	}
	return nil
}

// Client is the HTTP client of notifications: every connection goes
// through the policy (DialContext resolves with the policy's resolver and
// dials only allowed addresses; the dialer's Control checks the address
// once more at connect), no proxy (a proxy would dial on the bridge's
// behalf, unchecked), and no redirect followed (a 3xx is an answer, not a
// success). Requests carry their own timeouts.
func (p *Policy) Client() *http.Client {
	d := &net.Dialer{
		Timeout: 10 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: an address that does not parse", ErrRefused)
			}
			return p.allowed(ap.Addr())
		},
	}
	t := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			addrs, err := p.lookup(ctx, host)
			if err != nil {
				return nil, err
			}
			var last error = fmt.Errorf("%w: the host does not resolve", ErrRefused)
			for _, a := range addrs {
				if last = p.allowed(a); last != nil {
					continue
				}
				c, err := d.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
				if err == nil {
					return c, nil
				}
				last = err
			}
			return nil, last
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}
	return &http.Client{
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
