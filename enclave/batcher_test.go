package enclave

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/merkle"
)

func leafN(i int) [32]byte { return merkle.LeafHash([]byte{byte(i), byte(i >> 8)}) }

// quoteFunc imitates a fresh bundle: it waits delay and names the bundle
// after the root.
func quoteFunc(delay time.Duration) FreshFunc {
	return func(ctx context.Context, root [32]byte) ([]byte, string, error) {
		if delay > 0 {
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return nil, "", ctx.Err()
			}
		}
		bn := root // the tree head the batcher asks for
		return bn[:], attest.BundleID(bn[:]), nil
	}
}

func addConcurrently(t testing.TB, b *Batcher, n int) []*BatchResult {
	out := make([]*BatchResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := b.Add(context.Background(), leafN(i))
			if err != nil {
				t.Error(err)
				return
			}
			out[i] = res
		})
	}
	wg.Wait()
	return out
}

func TestBatcherProofs(t *testing.T) {
	tests := []struct {
		name    string
		cfg     BatchConfig
		delay   time.Duration
		n       int
		maxQuot int64
	}{
		{"one", BatchConfig{Window: time.Millisecond}, 0, 1, 1},
		{"window", BatchConfig{Window: 20 * time.Millisecond}, 10 * time.Millisecond, 50, 5},
		{"max size", BatchConfig{Window: 5 * time.Millisecond, MaxSize: 10}, time.Millisecond, 100, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBatcher(tt.cfg, quoteFunc(tt.delay))
			defer b.Close()
			res := addConcurrently(t, b, tt.n)
			for i, r := range res {
				if r == nil {
					t.Fatalf("leaf %d: no result", i)
				}
				p := r.Proof
				if err := merkle.VerifyInclusion(leafN(i), p.LeafIndex, p.TreeSize, p.Proof, p.Root); err != nil {
					t.Fatalf("leaf %d: %v", i, err)
				}
				if bn := attest.BatchNonce(p.TreeSize, p.Root); string(r.Bundle) != string(bn[:]) || p.EvidenceID != attest.BundleID(r.Bundle) {
					t.Fatalf("leaf %d: bundle not over its root", i)
				}
				if tt.cfg.MaxSize > 0 && p.TreeSize > uint64(tt.cfg.MaxSize) {
					t.Fatalf("batch of %d over max %d", p.TreeSize, tt.cfg.MaxSize)
				}
			}
			st := b.Stats()
			if st.Leaves != int64(tt.n) || st.Batches > tt.maxQuot {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestBatcherErrors(t *testing.T) {
	boom := errors.New("quote failed")
	b := NewBatcher(BatchConfig{Window: time.Millisecond}, func(ctx context.Context, root [32]byte) ([]byte, string, error) {
		return nil, "", boom
	})
	if _, err := b.Add(context.Background(), leafN(1)); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	b.Close()
	if _, err := b.Add(context.Background(), leafN(1)); !errors.Is(err, ErrBatcherClosed) {
		t.Fatalf("after close: %v", err)
	}
	b.Close() // idempotent

	// A waiter whose context ends returns at once; Close fails the others.
	release := make(chan struct{})
	b2 := NewBatcher(BatchConfig{Window: time.Millisecond}, func(ctx context.Context, root [32]byte) ([]byte, string, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, "", ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b2.Add(ctx, leafN(2)); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled add: %v", err)
	}
	b2.Close()
	close(release)
}

// BenchmarkBatcher200 adds 200 leaves concurrently against a 50 ms quote
// (the simulated TDX default) and reports quotes per 200 adds.
func BenchmarkBatcher200(b *testing.B) {
	var quotes, batches int64
	for b.Loop() {
		bt := NewBatcher(BatchConfig{}, quoteFunc(50*time.Millisecond))
		addConcurrently(b, bt, 200)
		batches += bt.Stats().Batches
		bt.Close()
		quotes++
	}
	b.ReportMetric(float64(batches)/float64(quotes), "quotes/200adds")
}

func BenchmarkSignReceipt(b *testing.B) {
	k, _ := newTestKeeper(b, &fakeAttester{}, nil)
	req := make([]byte, 2048)
	resp := make([]byte, 4096)
	r := testReceipt(nil, nil)
	b.ReportAllocs()
	for b.Loop() {
		r.RequestSHA256 = sha256Sum(req)
		r.ResponseSHA256 = sha256Sum(resp)
		if _, err := k.SignReceipt(r); err != nil {
			b.Fatal(err)
		}
	}
}
