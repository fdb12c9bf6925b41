package auth

import (
	"context"
	"net/http"
	"time"
)

// CheckJWKS fetches the JWK Set at url once, as mode jwt will, and returns
// how many usable public signing keys it holds: for `qubs-fhir-bridge
// check`, so that a wrong BRIDGE_JWT_JWKS_URL shows before the first
// client is refused.
func CheckJWKS(ctx context.Context, url string) (int, error) {
	if err := checkKeyURL(url); err != nil {
		return 0, err
	}
	keys, err := fetchJWKS(ctx, &http.Client{Timeout: 10 * time.Second}, url)
	return len(keys), err
}
