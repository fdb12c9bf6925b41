package qubs

import (
	"context"
	"fmt"
	"iter"
	"net/http"
	"net/url"
)

// Page size limits of "List pending reporting appointments".
const (
	MinPageSize     = 1
	MaxPageSize     = 500
	DefaultPageSize = 100 // what QUBS uses when pageSize is omitted
)

// ValidatePageSize checks a page size: 0 (omit it, QUBS's default of 100)
// or 1..500. It returns a KindInvalid *Error.
func ValidatePageSize(n int) error {
	if n == 0 || (n >= MinPageSize && n <= MaxPageSize) {
		return nil
	}
	return &Error{Kind: KindInvalid, Op: "qubs.ValidatePageSize", Err: fmt.Errorf("page size %d is outside %d..%d", n, MinPageSize, MaxPageSize)}
}

// ListPending returns one page of the domain's PENDING REPORTING
// appointments. pageSize 0 leaves QUBS's default; nextToken "" asks for the
// first page. A page may be short or even empty and still have a next one:
// only page.More() says whether to go on.
func (c *Client) ListPending(ctx context.Context, domain string, pageSize int, nextToken string) (_ *AppointmentPage, err error) {
	defer wrap(&err, "qubs.ListPending")
	if err := ValidatePageSize(pageSize); err != nil {
		return nil, err
	}
	u, err := c.apiURL(domain, "pending")
	if err != nil {
		return nil, err
	}
	if q := pageQuery(pageSize, nextToken); q != "" {
		u += "?" + q
	}
	var p AppointmentPage
	if err := c.getJSON(ctx, OpListAppointments, u, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// pageQuery encodes the paging parameters. The token is opaque and
// "URL-safe" by the documentation, but it is escaped anyway: it is
// QUBS's to change.
func pageQuery(pageSize int, nextToken string) string {
	q := url.Values{}
	if pageSize != 0 {
		q.Set("pageSize", fmt.Sprint(pageSize))
	}
	if nextToken != "" {
		q.Set("nextToken", nextToken)
	}
	return q.Encode()
}

// nextPage decides, after the page fetched with token prev, whether to go
// on and with which token. Empty, null and omitted nextToken all end the
// walk (the documentation says "empty/omitted"; its schema allows null). A
// token equal to the one just used would loop forever, so it is an error.
func nextPage(prev string, p *AppointmentPage) (next string, more bool, err error) {
	if !p.More() {
		return "", false, nil
	}
	if *p.NextToken == prev {
		return "", false, &Error{Kind: KindInternal, Err: fmt.Errorf("QUBS returned the nextToken it was given; stopping to avoid an endless walk")}
	}
	return *p.NextToken, true, nil
}

// Pages walks every page of the domain's pending reporting list, following
// nextToken. It stops after the first error, which it yields with a nil
// page, and when the loop body stops. Pages may be empty.
func (c *Client) Pages(ctx context.Context, domain string, pageSize int) iter.Seq2[*AppointmentPage, error] {
	return func(yield func(*AppointmentPage, error) bool) {
		token := ""
		for {
			p, err := c.ListPending(ctx, domain, pageSize, token)
			if err != nil {
				yield(nil, err)
				return
			}
			if !yield(p, nil) {
				return
			}
			next, more, err := nextPage(token, p)
			if err != nil {
				wrap(&err, "qubs.Pages")
				yield(nil, err)
				return
			}
			if !more {
				return
			}
			token = next
		}
	}
}

// Pending walks every pending reporting appointment of the domain, page by
// page. It stops after the first error, which it yields with a zero
// Appointment. QUBS does not guarantee an order.
func (c *Client) Pending(ctx context.Context, domain string, pageSize int) iter.Seq2[Appointment, error] {
	return func(yield func(Appointment, error) bool) {
		for p, err := range c.Pages(ctx, domain, pageSize) {
			if err != nil {
				yield(Appointment{}, err)
				return
			}
			for _, a := range p.Items {
				if !yield(a, nil) {
					return
				}
			}
		}
	}
}

// getJSON GETs an API URL, with retries, into out; op names the call.
func (c *Client) getJSON(ctx context.Context, op, u string, out any) error {
	_, err := c.send(ctx, &request{op: op, method: http.MethodGet, url: u, api: true, retry: true, decode: decodeInto(out)})
	return err
}

// decodeInto returns a request.decode that decodes JSON into out.
func decodeInto(out any) func(*http.Response, string) error {
	return func(resp *http.Response, corr string) error { return decodeJSON(resp, corr, out) }
}
