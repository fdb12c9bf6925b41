package perf

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// step performs one request of a client and returns an error for any
// answer but the expected one. Each client has its own step, which may
// keep state (the next link of a walk).
type step func(ctx context.Context) error

// loadResult is what a closed-loop load of several clients achieved.
type loadResult struct {
	requests int
	elapsed  time.Duration
	lat      []time.Duration // sorted
	errors   int
	firstErr error
}

// drive runs clients concurrent closed loops of their steps for d: each
// client sends its next request as soon as the previous one is answered,
// as a worklist client paging through results does. Requests in flight at
// the deadline finish and count.
func drive(ctx context.Context, clients int, d time.Duration, newStep func(client int) step) loadResult {
	var (
		mu  sync.Mutex
		res loadResult
		wg  sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for i := range clients {
		s := newStep(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var errs int
			var first error
			for ctx.Err() == nil && time.Now().Before(deadline) {
				t := time.Now()
				err := s(ctx)
				if err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			res.requests += len(lat)
			res.errors += errs
			if res.firstErr == nil {
				res.firstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	slices.Sort(res.lat)
	return res
}

// quantile of sorted durations, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// get fetches u and returns the body of a 200 answer.
func get(ctx context.Context, hc *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading the body: %w", u, err)
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d: %.300s", u, res.StatusCode, b)
	}
	return b, nil
}

// nextLink returns the url of a searchset Bundle's "next" link, "" when
// there is none. Bundle.link comes before Bundle.entry in what the bridge
// sends, so the decoder stops long before the entries; it skips them
// when they come first.
func nextLink(body []byte) (string, error) {
	d := json.NewDecoder(bytes.NewReader(body))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return "", errors.New("a Bundle must be a JSON object")
	}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return "", fmt.Errorf("reading the Bundle: %w", err)
		}
		if t != "link" {
			var skip json.RawMessage
			if err := d.Decode(&skip); err != nil {
				return "", fmt.Errorf("reading the Bundle: %w", err)
			}
			continue
		}
		var links []struct{ Relation, URL string }
		if err := d.Decode(&links); err != nil {
			return "", fmt.Errorf("reading Bundle.link: %w", err)
		}
		for _, l := range links {
			if l.Relation == "next" {
				return l.URL, nil
			}
		}
		return "", nil
	}
	return "", nil
}

// nextToken returns a QUBS page's nextToken, "" when it is null, empty or
// absent. It is the last member of the page, after the items, so it is
// looked for from the end rather than by decoding a hundred appointments.
func nextToken(body []byte) (string, error) {
	i := bytes.LastIndex(body, []byte(`"nextToken":`))
	if i < 0 {
		return "", nil
	}
	var tok *string
	if err := json.NewDecoder(bytes.NewReader(body[i+len(`"nextToken":`):])).Decode(&tok); err != nil {
		return "", fmt.Errorf("reading nextToken: %w", err)
	}
	if tok == nil {
		return "", nil
	}
	return *tok, nil
}
