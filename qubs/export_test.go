package qubs

import (
	"context"
	"time"
)

// Test hooks for package qubs_test: they replace the client's view of time
// so that backoff and expiry are checked without waiting.

// SetSleep replaces the function the client waits with.
func SetSleep(c *Client, f func(ctx context.Context, d time.Duration) error) { c.sleep = f }

// SetNow replaces the client's clock.
func SetNow(c *Client, f func() time.Time) { c.now = f }

// SetJitter replaces the backoff jitter.
func SetJitter(c *Client, f func(d time.Duration) time.Duration) { c.jitter = f }
