package nvidia

import (
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"
)

// ChainCache remembers certificate chains that verified, keyed by the
// SHA-256 of the chain's PEM bytes and the root pool they verified to, so
// a GPU that attests again (same chain, new report) costs one signature
// check instead of five. An entry is used only while the verification time
// lies inside the validity of every certificate on its path. Root pools are
// compared by identity: pass the same *x509.CertPool on every call. (A
// CertPool can only grow, so an entry never outlives the trust it was
// granted under.) Safe for concurrent use.
type ChainCache struct {
	mu    sync.Mutex
	max   int
	m     map[chainKey]*leafInfo
	order []chainKey // insertion order, for eviction
}

type chainKey struct {
	digest [sha256.Size]byte
	roots  *x509.CertPool
}

// NewChainCache returns a cache holding at most max chains (at least 1);
// the oldest entry is dropped first.
func NewChainCache(max int) *ChainCache {
	if max < 1 {
		max = 1
	}
	return &ChainCache{max: max, m: make(map[chainKey]*leafInfo, max)}
}

// Len returns the number of cached chains.
func (c *ChainCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

func (c *ChainCache) get(k chainKey, now time.Time) *leafInfo {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	li := c.m[k]
	c.mu.Unlock()
	if li == nil || now.Before(li.notBefore) || now.After(li.notAfter) {
		return nil
	}
	return li
}

func (c *ChainCache) put(k chainKey, li *leafInfo) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; ok {
		c.m[k] = li
		return
	}
	for len(c.order) >= c.max {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	c.m[k] = li
	c.order = append(c.order, k)
}
