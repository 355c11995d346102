package enclave

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/merkle"
)

// Batch defaults: a window short against a quote (~50 ms on TDX) and a
// batch large enough that proofs stay under 10 hashes.
const (
	DefaultBatchWindow  = 5 * time.Millisecond
	DefaultBatchMaxSize = 1024
)

// ErrBatcherClosed: the batcher was closed before the leaf was covered.
var ErrBatcherClosed = errors.New("batcher closed")

// BatchConfig configures a Batcher.
type BatchConfig struct {
	// Window is how long the first leaf of a batch waits for company
	// before the batch is quoted (default 5 ms).
	Window time.Duration
	// MaxSize caps the leaves per batch (default 1024).
	MaxSize int
}

func (c *BatchConfig) validate() error {
	if c.Window < 0 || c.MaxSize < 0 {
		return errors.New("batch config: negative window or size")
	}
	if c.Window == 0 {
		c.Window = DefaultBatchWindow
	}
	if c.MaxSize == 0 {
		c.MaxSize = DefaultBatchMaxSize
	}
	return nil
}

// FreshFunc produces a fresh bundle with the given epoch nonce (the
// batch's tree head, attest.BatchNonce(tree_size, root)) and returns its
// canonical bytes and id.
type FreshFunc func(ctx context.Context, nonce [32]byte) (raw []byte, id string, err error)

// BatchResult is what one leaf gets back.
type BatchResult struct {
	Proof attest.BatchProof
	// Bundle is the fresh bundle's canonical bytes (shared by the batch;
	// do not modify).
	Bundle []byte
}

// BatchStats counts the work done.
type BatchStats struct {
	Batches int64 // fresh bundles requested (quotes)
	Leaves  int64 // leaves covered
}

// Batcher covers leaves with fresh evidence, one quote per batch. A batch
// closes when its first leaf has waited Window, when it reaches MaxSize, or
// — while a quote is in progress — when that quote finishes: quotes never
// overlap, so under load the batch grows with the quote latency instead of
// queueing quotes. Safe for concurrent use.
type Batcher struct {
	cfg   BatchConfig
	fresh FreshFunc

	ctx    context.Context // lives until Close; a waiter leaving does not cancel its batch
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	pending []*batchWaiter
	timer   *time.Timer
	busy    bool
	closed  bool

	batches, leaves atomic.Int64
}

type batchWaiter struct {
	leaf [32]byte
	ch   chan batchOutcome
}

type batchOutcome struct {
	res *BatchResult
	err error
}

// NewBatcher returns a Batcher; zero (or negative) config fields take the
// defaults.
func NewBatcher(cfg BatchConfig, fresh FreshFunc) *Batcher {
	if cfg.Window <= 0 {
		cfg.Window = DefaultBatchWindow
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultBatchMaxSize
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Batcher{cfg: cfg, fresh: fresh, ctx: ctx, cancel: cancel}
}

// Add submits a leaf hash (attest.Receipt.LeafHash) and waits for the fresh
// bundle that covers it. If ctx ends first Add returns ctx's error; the leaf
// stays in its batch.
func (b *Batcher) Add(ctx context.Context, leaf [32]byte) (*BatchResult, error) {
	w := &batchWaiter{leaf: leaf, ch: make(chan batchOutcome, 1)}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrBatcherClosed
	}
	b.pending = append(b.pending, w)
	switch {
	case b.busy:
		// The running quote's completion starts the next batch.
	case len(b.pending) >= b.cfg.MaxSize:
		b.startLocked()
	case len(b.pending) == 1:
		b.timer = time.AfterFunc(b.cfg.Window, b.onTimer)
	}
	b.mu.Unlock()
	select {
	case o := <-w.ch:
		return o.res, o.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *Batcher) onTimer() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.busy && !b.closed && len(b.pending) > 0 {
		b.startLocked()
	}
}

// startLocked takes up to MaxSize pending leaves and quotes them.
func (b *Batcher) startLocked() {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	n := min(len(b.pending), b.cfg.MaxSize)
	batch := b.pending[:n:n]
	b.pending = append([]*batchWaiter(nil), b.pending[n:]...)
	b.busy = true
	b.wg.Add(1)
	go b.run(batch)
}

func (b *Batcher) run(batch []*batchWaiter) {
	defer b.wg.Done()
	hashes := make([][32]byte, len(batch))
	for i, w := range batch {
		hashes[i] = w.leaf
	}
	tree := merkle.New(hashes)
	root := tree.Root()
	raw, id, err := b.fresh(b.ctx, attest.BatchNonce(uint64(len(batch)), root))
	// Count before waking the waiters, so that Stats read after Add
	// returns includes this batch.
	b.batches.Add(1)
	if err == nil {
		b.leaves.Add(int64(len(batch)))
	}
	for i, w := range batch {
		if err != nil {
			w.ch <- batchOutcome{err: fmt.Errorf("producing fresh bundle: %w", err)}
			continue
		}
		path, perr := tree.Proof(i)
		if perr != nil {
			w.ch <- batchOutcome{err: perr}
			continue
		}
		w.ch <- batchOutcome{res: &BatchResult{
			Proof:  attest.BatchProof{EvidenceID: id, LeafIndex: uint64(i), TreeSize: uint64(len(batch)), Proof: path, Root: root},
			Bundle: raw,
		}}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.busy = false
	if len(b.pending) > 0 && !b.closed {
		// These leaves waited at least one quote already: go now.
		b.startLocked()
	}
}

// Stats returns the counters.
func (b *Batcher) Stats() BatchStats {
	return BatchStats{Batches: b.batches.Load(), Leaves: b.leaves.Load()}
}

// Close fails pending leaves with ErrBatcherClosed, cancels a quote in
// progress and waits for it to finish.
func (b *Batcher) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.wg.Wait()
		return
	}
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	pending := b.pending
	b.pending = nil
	b.mu.Unlock()
	for _, w := range pending {
		w.ch <- batchOutcome{err: ErrBatcherClosed}
	}
	b.cancel()
	b.wg.Wait()
}
