package cliutil

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/teegate/teegate/worker/engine"
)

// lateEngine fails its first model listings, as a server still loading.
type lateEngine struct {
	engine.Engine
	fails atomic.Int64
	calls atomic.Int64
}

func (e *lateEngine) Models(ctx context.Context) ([]engine.Model, error) {
	if e.calls.Add(1) <= e.fails.Load() {
		return nil, errors.New("connection refused")
	}
	return []engine.Model{{ID: "m"}}, nil
}

func TestWaitForEngine(t *testing.T) {
	e := &lateEngine{}
	e.fails.Store(3)
	if err := waitForEngine(context.Background(), e, nil, 1e6); err != nil || e.calls.Load() != 4 {
		t.Fatalf("err %v after %d calls", err, e.calls.Load())
	}
	down := &lateEngine{}
	down.fails.Store(1 << 62)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := waitForEngine(ctx, down, nil, 1e6); !errors.Is(err, context.Canceled) {
		t.Fatalf("an engine that never answers: %v", err)
	}
}
