package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"postgres://bridge:s3cret@db:5432/q?sslmode=disable",
		"postgres://bridge@db/q?password=s3cret",
		"postgres://bridge@db/q?sslmode=verify-full&sslpassword=s3cret&search_path=bridge",
	} {
		got := redactURL(s)
		assert.NotContains(t, got, "s3cret", s)
		assert.True(t, strings.HasPrefix(got, "postgres://bridge"), got)
	}
	assert.Equal(t, "sqlite:bridge.db", redactURL("sqlite:bridge.db"))
	assert.Contains(t, redactURL("postgres://bridge@db/q?search_path=bridge"), "search_path=bridge")
}
