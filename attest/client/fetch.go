package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/teegate/teegate/attest"
)

// Paths of the gateway's attestation endpoints, under the base URL.
const (
	EvidencePath = "/v1/attestation/evidence/"
	ReceiptPath  = "/v1/attestation/receipts/"
)

// fetcher returns the bundle fetch for answers to orig: through the
// configured client, or next.
func (v *Verifier) fetcher(orig *http.Request, next doFunc) func(context.Context, string) ([]byte, error) {
	do := next
	if v.cfg.HTTPClient != nil {
		do = v.cfg.HTTPClient.Do
	}
	base := v.cfg.BaseURL
	if base == "" {
		base = baseOf(orig.URL)
	}
	return func(ctx context.Context, id string) ([]byte, error) {
		return get(ctx, do, base+EvidencePath+url.PathEscape(id), orig, attest.MaxBundleSize)
	}
}

// baseOf is the scheme, host and path prefix before "/v1/" of a request.
func baseOf(u *url.URL) string {
	p := u.Path
	if i := strings.Index(p, "/v1/"); i >= 0 {
		p = p[:i]
	} else {
		p = ""
	}
	return u.Scheme + "://" + u.Host + p
}

// get fetches url. The Authorization header of orig goes along only to
// orig's own host: a configured evidence host never sees the API key.
func get(ctx context.Context, do doFunc, u string, orig *http.Request, max int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w: %w", u, ErrEvidenceFetch, err)
	}
	req.Header.Set("Accept", "application/json")
	if orig != nil && orig.URL.Host == req.URL.Host && orig.URL.Scheme == req.URL.Scheme {
		if a := orig.Header.Get("Authorization"); a != "" {
			req.Header.Set("Authorization", a)
		}
	}
	resp, err := do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w: %w", req.URL.Path, ErrEvidenceFetch, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching %s: status %d: %w", req.URL.Path, resp.StatusCode, ErrEvidenceFetch)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w: %w", req.URL.Path, ErrEvidenceFetch, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("fetching %s: over %d bytes: %w", req.URL.Path, max, ErrEvidenceFetch)
	}
	return b, nil
}

// FetchEvidence fetches the canonical bytes of a bundle from BaseURL. It
// does not verify them (see VerifyTranscript, or the RoundTripper).
func (v *Verifier) FetchEvidence(ctx context.Context, id string) ([]byte, error) {
	do, err := v.directDo()
	if err != nil {
		return nil, err
	}
	return get(ctx, do, v.cfg.BaseURL+EvidencePath+url.PathEscape(id), nil, attest.MaxBundleSize)
}

// FetchReceipt fetches the signed receipt of a request id from BaseURL
// (GET {base}/v1/attestation/receipts/{id}), for verifying an answer
// whose receipt was not kept. It does not verify it.
func (v *Verifier) FetchReceipt(ctx context.Context, requestID string) (*attest.SignedReceipt, error) {
	do, err := v.directDo()
	if err != nil {
		return nil, err
	}
	b, err := get(ctx, do, v.cfg.BaseURL+ReceiptPath+url.PathEscape(requestID), nil, attest.MaxReceiptSize)
	if err != nil {
		return nil, err
	}
	sr, err := attest.ParseReceipt(b)
	if err != nil {
		return nil, fmt.Errorf("fetching receipt: %w", err)
	}
	return sr, nil
}

func (v *Verifier) directDo() (doFunc, error) {
	if v.cfg.BaseURL == "" {
		return nil, errors.New("fetching: client config has no base URL")
	}
	if v.cfg.HTTPClient != nil {
		return v.cfg.HTTPClient.Do, nil
	}
	return http.DefaultClient.Do, nil
}
