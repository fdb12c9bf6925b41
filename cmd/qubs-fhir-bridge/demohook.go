package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/subs"
)

// demoHook is the demo's webhook receiver: a loopback endpoint the demo
// subscribes to every topic, printing one line per notification (type,
// topic, event numbers, focus references: ids, no resource content), so a
// newcomer sees Subscriptions work without writing a receiver.
type demoHook struct {
	url string
	srv *http.Server
	out io.Writer
	mu  sync.Mutex // one line at a time
}

func startDemoHook(out io.Writer) (*demoHook, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo webhook: %w", err)
	}
	h := &demoHook{url: "http://" + ln.Addr().String() + "/notify", out: out}
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = h.srv.Serve(ln) }()
	return h, nil
}

func (h *demoHook) close() { _ = h.srv.Close() }

func (h *demoHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintln(h.out, "webhook: "+notificationSummary(body))
}

// notificationSummary is one line about a notification Bundle.
func notificationSummary(body []byte) string {
	var b struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if json.Unmarshal(body, &b) != nil || len(b.Entry) == 0 {
		return "a body that is not a notification Bundle"
	}
	var st subs.Status
	if json.Unmarshal(b.Entry[0].Resource, &st) != nil {
		return "a notification without its SubscriptionStatus"
	}
	var typ, topic, sub string
	var events []string
	for _, p := range st.Parameter {
		switch p.Name {
		case "type":
			typ = p.ValueCode
		case "topic":
			topic = p.ValueCanonical[strings.LastIndex(p.ValueCanonical, "/")+1:]
		case "subscription":
			sub = p.ValueReference.Reference[strings.LastIndex(p.ValueReference.Reference, "Subscription/"):]
		case "notification-event":
			var num, focus string
			for _, part := range p.Part {
				switch part.Name {
				case "event-number":
					num = part.ValueString
				case "focus":
					ref := part.ValueReference.Reference
					if i := strings.LastIndex(ref, "/"); i > 0 {
						if j := strings.LastIndex(ref[:i], "/"); j >= 0 {
							ref = ref[j+1:]
						}
					}
					focus = " " + ref
				}
			}
			events = append(events, "#"+num+focus)
		}
	}
	line := fmt.Sprintf("%s %s (%s)", typ, topic, sub)
	if len(events) > 0 {
		line += ": " + strings.Join(events, ", ")
	}
	return line
}

// subscribeDemoHook subscribes the hook to every topic through the
// bridge's own API, as a client would (id-only payloads). The listener
// already accepts, so the requests wait for the server rather than fail.
func subscribeDemoHook(ctx context.Context, base, hook string, log *slog.Logger) {
	for _, topic := range subs.TopicURLs {
		body, _ := json.Marshal(map[string]any{
			"resourceType": "Subscription", "status": "requested", "reason": "qubs-fhir-bridge demo webhook",
			"criteria": topic,
			"channel": map[string]any{"type": "rest-hook", "endpoint": hook, "payload": "application/fhir+json",
				"_payload": map[string]any{"extension": []any{map[string]any{"url": subs.ExtPayloadContent, "valueCode": "id-only"}}}},
		})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/Subscription", bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/fhir+json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("demo: subscribing the webhook", "err", err)
			}
			return
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			log.Warn("demo: subscribing the webhook", "status", res.StatusCode)
		}
	}
}
