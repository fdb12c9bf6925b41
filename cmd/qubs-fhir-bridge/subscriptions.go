package main

import (
	"log/slog"
	"net"
	"strings"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/subs"
)

// subscriptionWorkers makes the Subscription dispatcher and notification
// sender of a serving bridge and wires them into cfg: the endpoint policy
// (loopback endpoints only when the bridge itself listens on loopback) and
// the sender's kick. The caller sets the sender's Resolve once the server
// exists, and runs both.
func subscriptionWorkers(ln net.Listener, cfg *server.Config, st store.Store, bg background, name string, log *slog.Logger) (*subs.Sender, *subs.Dispatcher) {
	policy := &subs.Policy{AllowLoopback: isLoopback(ln.Addr().String()), AllowNets: bg.subscriptionNets}
	scheme := "http"
	if bg.tls != nil {
		scheme = "https"
	}
	root := scheme + "://" + ln.Addr().String()
	if cfg.PublicURL != "" {
		root = strings.TrimRight(cfg.PublicURL, "/")
	}
	sender := &subs.Sender{Store: st, Client: policy.Client(), Logger: log.With("component", "subscriptions"), Name: name,
		ErrorAfter: bg.subscriptionErrorAfter, Observer: bg.subscriptionObserver, Base: func(domain string) string { return root + "/fhir/" + domain }}
	dispatcher := &subs.Dispatcher{Store: st, Logger: log.With("component", "subscriptions"),
		Dispatched: func(int, int) { sender.Kick() }}
	cfg.SubscriptionPolicy, cfg.SubscriptionKick = policy, sender.Kick
	return sender, dispatcher
}
