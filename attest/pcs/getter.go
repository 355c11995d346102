package pcs

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// CollateralRequest names the collateral a quote needs.
type CollateralRequest struct {
	TEE   TEE
	FMSPC [6]byte
	// CA is the PCK issuer kind, CAPlatform or CAProcessor.
	CA string
}

// Getter provides collateral for a platform. Implementations must be safe
// for concurrent use.
type Getter interface {
	GetCollateral(ctx context.Context, req CollateralRequest) (*Collateral, error)
}

// GetterFunc adapts a function to Getter.
type GetterFunc func(ctx context.Context, req CollateralRequest) (*Collateral, error)

// GetCollateral calls f.
func (f GetterFunc) GetCollateral(ctx context.Context, req CollateralRequest) (*Collateral, error) {
	return f(ctx, req)
}

// StaticGetter returns the same collateral for every request; it is how an
// offline collateral file is plugged in where a Getter is expected.
func StaticGetter(c *Collateral) Getter {
	return GetterFunc(func(context.Context, CollateralRequest) (*Collateral, error) { return c, nil })
}

// maxBody bounds each PCS response; real ones are a few KiB (PCK CRLs of
// platform CAs reach ~100 KiB).
const maxBody = 4 << 20

// HTTPGetter fetches collateral from an Intel PCS
// (https://api.trustedservices.intel.com) or a PCCS speaking the PCS v4 API,
// and caches it per (TEE, FMSPC, CA) until the earliest nextUpdate of its
// parts or MaxAge, whichever comes first.
type HTTPGetter struct {
	// BaseURL is the service root, without the /sgx or /tdx path.
	BaseURL string
	// RootCRLURL is where the Intel SGX Root CA CRL is fetched; empty means
	// BaseURL + "/sgx/certification/v4/rootcacrl" (the PCCS route). For the
	// Intel PCS use https://certificates.trustedservices.intel.com/IntelSGXRootCA.der.
	RootCRLURL string
	// Client defaults to a client with a 30 s timeout.
	Client *http.Client
	// Now is the clock for cache expiry; defaults to time.Now.
	Now func() time.Time
	// MaxAge bounds how long an entry is reused; defaults to 12 h.
	MaxAge time.Duration

	mu    sync.Mutex
	cache map[CollateralRequest]cacheEntry
}

type cacheEntry struct {
	c       *Collateral
	expires time.Time
}

// NewHTTPGetter returns a getter for baseURL with defaults filled in.
func NewHTTPGetter(baseURL string) *HTTPGetter {
	return &HTTPGetter{BaseURL: strings.TrimRight(baseURL, "/")}
}

func (g *HTTPGetter) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// GetCollateral returns cached collateral or fetches it.
func (g *HTTPGetter) GetCollateral(ctx context.Context, req CollateralRequest) (*Collateral, error) {
	now := g.now()
	g.mu.Lock()
	if e, ok := g.cache[req]; ok && now.Before(e.expires) {
		g.mu.Unlock()
		return e.c, nil
	}
	g.mu.Unlock()

	c, err := g.fetch(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("fetching collateral: %w", err)
	}
	maxAge := g.MaxAge
	if maxAge <= 0 {
		maxAge = 12 * time.Hour
	}
	expires := now.Add(maxAge)
	for _, t := range []time.Time{c.TCBInfo.NextUpdate, c.QEIdentity.NextUpdate} {
		if t.Before(expires) {
			expires = t
		}
	}
	if c.PCKCRL != nil && !c.PCKCRL.NextUpdate.IsZero() && c.PCKCRL.NextUpdate.Before(expires) {
		expires = c.PCKCRL.NextUpdate
	}
	g.mu.Lock()
	if g.cache == nil {
		g.cache = make(map[CollateralRequest]cacheEntry)
	}
	g.cache[req] = cacheEntry{c: c, expires: expires}
	g.mu.Unlock()
	return c, nil
}

func (g *HTTPGetter) fetch(ctx context.Context, req CollateralRequest) (*Collateral, error) {
	base := strings.TrimRight(g.BaseURL, "/")
	tee := "sgx"
	if req.TEE == TEETDX {
		tee = "tdx"
	}
	ca := req.CA
	if ca == "" {
		ca = CAPlatform
	}
	var p PCSResponses
	var err error
	fmspc := strings.ToUpper(hex.EncodeToString(req.FMSPC[:]))
	p.TCBInfo, p.TCBInfoIssuerChain, err = g.get(ctx, base+"/"+tee+"/certification/v4/tcb?fmspc="+fmspc,
		"TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
	if err != nil {
		return nil, err
	}
	p.QEIdentity, p.QEIdentityIssuerChain, err = g.get(ctx, base+"/"+tee+"/certification/v4/qe/identity",
		"SGX-Enclave-Identity-Issuer-Chain")
	if err != nil {
		return nil, err
	}
	p.PCKCRL, p.PCKCRLIssuerChain, err = g.get(ctx, base+"/sgx/certification/v4/pckcrl?ca="+url.QueryEscape(ca)+"&encoding=der",
		"SGX-PCK-CRL-Issuer-Chain")
	if err != nil {
		return nil, err
	}
	rootURL := g.RootCRLURL
	if rootURL == "" {
		rootURL = base + "/sgx/certification/v4/rootcacrl"
	}
	if p.RootCRL, _, err = g.get(ctx, rootURL); err != nil {
		return nil, err
	}
	return CollateralFromPCS(p)
}

// get fetches url and returns the body and the first present header among
// chainHeaders (URL-decoded by ParseCertChain later).
func (g *HTTPGetter) get(ctx context.Context, u string, chainHeaders ...string) (body, chain []byte, err error) {
	client := g.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("building request: %v: %w", err, ErrCollateralUnavailable)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("requesting %s: %v: %w", redact(u), err, ErrCollateralUnavailable)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %v: %w", redact(u), err, ErrCollateralUnavailable)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("requesting %s: status %d: %w", redact(u), resp.StatusCode, ErrCollateralUnavailable)
	}
	if len(body) > maxBody {
		return nil, nil, fmt.Errorf("reading %s: body too large: %w", redact(u), ErrCollateralUnavailable)
	}
	for _, h := range chainHeaders {
		if v := resp.Header.Get(h); v != "" {
			return body, []byte(v), nil
		}
	}
	if len(chainHeaders) > 0 {
		return nil, nil, fmt.Errorf("requesting %s: no issuer chain header: %w", redact(u), errors.Join(ErrCollateralUnavailable, ErrCollateralFormat))
	}
	return body, nil, nil
}

// redact drops the query (it carries the platform's FMSPC) from logged URLs.
func redact(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}
