package policies

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teegate/teegate/attest/claims"
)

// evaluator is the interface attest/client and gateway/admission declare;
// both *Policy and *Holder must keep satisfying it.
type evaluator interface {
	Evaluate(ctx context.Context, c *claims.Claims, now time.Time) (allow bool, reasons []string, err error)
}

var (
	_ evaluator = (*Policy)(nil)
	_ evaluator = (*Holder)(nil)
)

func mentionsSimulated(reasons []string) bool {
	return slices.ContainsFunc(reasons, func(r string) bool { return strings.Contains(r, "simulated") })
}

func TestPolicyEvaluate(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name      string
		policy    string
		ctx       context.Context
		claims    *claims.Claims
		allow     bool
		simulated bool  // a reason mentions simulated
		err       error // nil: no error
	}{
		{"dev admits simulated", "dev", context.Background(), simulated(), true, false, nil},
		{"production denies simulated", "production", context.Background(), simulated(), false, true, nil},
		{"canceled context", "dev", canceled, simulated(), false, false, ErrEvaluation},
		{"nil claims", "dev", context.Background(), nil, false, false, ErrEvaluation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			allow, reasons, err := mustBuiltin(t, tt.policy).Evaluate(tt.ctx, tt.claims, testNow)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if allow != tt.allow {
				t.Fatalf("allow = %v, want %v (reasons %q)", allow, tt.allow, reasons)
			}
			if allow != (len(reasons) == 0) {
				t.Fatalf("allow = %v with reasons %q", allow, reasons)
			}
			if tt.simulated && !mentionsSimulated(reasons) {
				t.Fatalf("no reason names simulated: %q", reasons)
			}
		})
	}
}

func TestHolder(t *testing.T) {
	ctx := context.Background()
	dev, prod := mustBuiltin(t, "dev"), mustBuiltin(t, "production")

	t.Run("zero value denies", func(t *testing.T) {
		var h Holder
		allow, reasons, err := h.Evaluate(ctx, simulated(), testNow)
		if allow || len(reasons) == 0 || !errors.Is(err, ErrNoPolicy) {
			t.Fatalf("Evaluate = %v %q %v, want deny with ErrNoPolicy", allow, reasons, err)
		}
		if h.Policy() != nil {
			t.Fatal("zero Holder has a policy")
		}
	})
	t.Run("set swaps", func(t *testing.T) {
		h := NewHolder(dev)
		if allow, reasons, err := h.Evaluate(ctx, simulated(), testNow); !allow || err != nil {
			t.Fatalf("dev: %v %q %v", allow, reasons, err)
		}
		if prev := h.Set(prod); prev != dev {
			t.Fatalf("Set returned %v, want the dev policy", prev)
		}
		d, err := h.Eval(ctx, simulated(), testNow)
		if err != nil || d.Allow || !mentionsSimulated(d.Reasons) || d.PolicyHash != prod.Hash() {
			t.Fatalf("production: %+v %v", d, err)
		}
	})
	t.Run("set nil fails closed", func(t *testing.T) {
		h := NewHolder(dev)
		h.Set(nil)
		if allow, _, err := h.Evaluate(ctx, simulated(), testNow); allow || !errors.Is(err, ErrNoPolicy) {
			t.Fatalf("Evaluate = %v %v, want deny with ErrNoPolicy", allow, err)
		}
	})
}

// TestHolderConcurrentSwap checks that every evaluation racing with Set
// sees one whole policy: dev's decisions allow, production's deny.
func TestHolderConcurrentSwap(t *testing.T) {
	ctx := context.Background()
	dev, prod := mustBuiltin(t, "dev"), mustBuiltin(t, "production")
	h := NewHolder(dev)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			h.Set([]*Policy{dev, prod}[i%2])
		}
	})
	var evals sync.WaitGroup
	for range 4 {
		evals.Go(func() {
			for i := range 200 {
				// Vary now so some evaluations miss the cache.
				d, err := h.Eval(ctx, simulated(), testNow.Add(time.Duration(i%3)*time.Second))
				if err != nil {
					t.Error(err)
					return
				}
				want := d.PolicyName == "dev"
				if d.Allow != want || (d.PolicyHash != dev.Hash() && d.PolicyHash != prod.Hash()) {
					t.Errorf("decision mixes policies: %+v", d)
					return
				}
			}
		})
	}
	evals.Wait()
	close(stop)
	wg.Wait()
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "production.rego")
	if err := os.WriteFile(file, []byte(testRego), 0o600); err != nil {
		t.Fatal(err)
	}
	prod := mustBuiltin(t, "production")
	tests := []struct {
		arg      string
		wantHash string // "" when an error is wanted
		err      error
	}{
		{"production", prod.Hash(), nil},
		{"dev", mustBuiltin(t, "dev").Hash(), nil},
		{file, mustLoad(t, file).Hash(), nil},
		{"", "", ErrUnknownPolicy},
		{filepath.Join(dir, "missing.rego"), "", fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.arg, func(t *testing.T) {
			p, err := Resolve(tt.arg)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Resolve(%q) err = %v, want %v", tt.arg, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Hash() != tt.wantHash {
				t.Fatalf("Resolve(%q) hash = %s, want %s", tt.arg, p.Hash(), tt.wantHash)
			}
		})
	}
	if !IsBuiltin("dev") || IsBuiltin("./dev") || IsBuiltin(file) {
		t.Fatal("IsBuiltin is wrong")
	}
}

func mustLoad(t testing.TB, path string) *Policy {
	t.Helper()
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func BenchmarkHolderEvaluate(b *testing.B) {
	ctx := context.Background()
	h := NewHolder(mustBuiltin(b, "dev"))
	c := simulated()
	if allow, _, err := h.Evaluate(ctx, c, testNow); !allow || err != nil {
		b.Fatal(allow, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		h.Evaluate(ctx, c, testNow)
	}
}
