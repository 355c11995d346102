package attest

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/teegate/teegate/attest/claims"
)

// VerdictCache remembers successfully verified bundles by id, so checking a
// receipt against a bundle already seen costs a map lookup instead of quote
// and certificate-chain verification. It holds at most its capacity and
// evicts the least recently used entry. Only successes are cached: a bundle
// that failed may succeed later (collateral refreshed) and must be
// re-examined. Safe for concurrent use.
type VerdictCache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	items map[string]*list.Element
}

// NewVerdictCache returns a cache for up to max verdicts (minimum 1).
func NewVerdictCache(max int) *VerdictCache {
	if max < 1 {
		max = 1
	}
	return &VerdictCache{max: max, ll: list.New(), items: make(map[string]*list.Element)}
}

// Get returns the verdict for a bundle id.
func (c *VerdictCache) Get(id string) (*Verified, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[id]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*Verified), true
}

// Put stores a verdict under its id.
func (c *VerdictCache) Put(v *Verified) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[v.ID]; ok {
		e.Value = v
		c.ll.MoveToFront(e)
		return
	}
	c.items[v.ID] = c.ll.PushFront(v)
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*Verified).ID)
	}
}

// Len is the number of cached verdicts.
func (c *VerdictCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// Verifier verifies bundles and receipts under fixed options, caching bundle
// verdicts. The options are fixed at construction because a cached verdict
// is only valid for the options it was reached under.
type Verifier struct {
	opts  VerifyOptions
	cache *VerdictCache
}

// NewVerifier returns a Verifier; cacheSize bounds the verdict cache.
func NewVerifier(opts VerifyOptions, cacheSize int) *Verifier {
	return &Verifier{opts: opts, cache: NewVerdictCache(cacheSize)}
}

// Cache exposes the verdict cache (to pre-load or inspect it).
func (v *Verifier) Cache() *VerdictCache { return v.cache }

// Bundle verifies raw canonical bundle bytes, or returns the cached verdict
// for them. Age limits are re-checked on every call, since a cached bundle
// keeps ageing.
func (v *Verifier) Bundle(ctx context.Context, raw []byte) (*Verified, error) {
	sum := sha256.Sum256(raw)
	if vd, ok := v.cache.Get(hex.EncodeToString(sum[:])); ok {
		return v.fresh(vd)
	}
	vd, err := verifyBundle(ctx, raw, &v.opts)
	if err != nil {
		return nil, err
	}
	v.cache.Put(vd)
	return vd, nil
}

// Known returns the cached verdict for a bundle id, if any.
func (v *Verifier) Known(id string) (*Verified, bool) {
	vd, ok := v.cache.Get(id)
	if !ok {
		return nil, false
	}
	vd, err := v.fresh(vd)
	return vd, err == nil
}

// fresh re-checks the age of a cached verdict and returns a copy whose
// claims carry the current age (the cached claims stay untouched).
func (v *Verifier) fresh(vd *Verified) (*Verified, error) {
	now := v.opts.now()
	if err := checkAge(vd.Bundle.Created, now, &v.opts); err != nil {
		return nil, fmt.Errorf("verifying bundle: %w", err)
	}
	// One allocation for both copies: this runs for every receipt checked
	// against a cached bundle.
	cp := &struct {
		v Verified
		c claims.Claims
	}{*vd, *vd.Claims}
	cp.c.AgeSeconds = int64(now.Sub(vd.Bundle.Created) / time.Second)
	cp.v.Claims = &cp.c
	return &cp.v, nil
}

// Receipt verifies a signed receipt end to end: it resolves the receipt's
// bundle (from the cache, or by verifying bundleRaw), the fresh bundle named
// by a batch proof (from the cache or freshRaw), and runs VerifyReceipt.
// bundleRaw and freshRaw may be nil when the bundles are already cached. It
// returns the claims of the receipt's bundle.
func (v *Verifier) Receipt(ctx context.Context, sr *SignedReceipt, chk ReceiptCheck, bundleRaw, freshRaw []byte) (*claims.Claims, error) {
	ev, err := v.resolve(ctx, sr.Receipt.EvidenceID, bundleRaw)
	if err != nil {
		return nil, fmt.Errorf("verifying receipt: %w", err)
	}
	var fresh *Verified
	if sr.Batch != nil {
		fresh, err = v.resolve(ctx, sr.Batch.EvidenceID, freshRaw)
		if err != nil {
			return nil, fmt.Errorf("verifying receipt: fresh bundle: %w", err)
		}
	}
	if chk.Now.IsZero() {
		chk.Now = v.opts.now()
	}
	if chk.MaxClockSkew == 0 {
		chk.MaxClockSkew = v.opts.MaxClockSkew
	}
	if err := VerifyReceipt(sr, ev, fresh, chk); err != nil {

		return nil, err
	}
	return ev.Claims, nil
}

func (v *Verifier) resolve(ctx context.Context, id string, raw []byte) (*Verified, error) {
	if vd, ok := v.cache.Get(id); ok {
		return v.fresh(vd)
	}
	if raw == nil {
		return nil, fmt.Errorf("bundle %.16s not known: %w", id, ErrEvidenceMismatch)
	}
	if BundleID(raw) != id {
		return nil, fmt.Errorf("offered bundle is not %.16s: %w", id, ErrEvidenceMismatch)
	}
	return v.Bundle(ctx, raw)
}
