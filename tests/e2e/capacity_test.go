package e2e

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/builtin"
)

// concurrencyMeter wraps an engine and records how many calls it serves at
// once (a stream counts until it is closed) and the most it ever did.
type concurrencyMeter struct {
	engine.Engine
	now, peak atomic.Int64
}

func (m *concurrencyMeter) enter() {
	n := m.now.Add(1)
	for p := m.peak.Load(); n > p && !m.peak.CompareAndSwap(p, n); p = m.peak.Load() {
	}
}

func (m *concurrencyMeter) Do(ctx context.Context, call engine.Call) (*engine.Result, error) {
	m.enter()
	res, err := m.Engine.Do(ctx, call)
	if err != nil || res.Stream == nil {
		m.now.Add(-1)
		return res, err
	}
	res.Stream = &meteredStream{Stream: res.Stream, m: m}
	return res, nil
}

type meteredStream struct {
	engine.Stream
	m    *concurrencyMeter
	once sync.Once
}

func (s *meteredStream) Close() error {
	s.once.Do(func() { s.m.now.Add(-1) })
	return s.Stream.Close()
}

// A worker advertising max_concurrency 2 never gets a third request at
// once from a gateway: requests beyond its capacity wait in the gateway
// for a slot instead of being sent to queue in the worker. The worker's
// own queue here holds one request, so a gateway that sent more would
// be answered busy and retry (more requests taken than sent) or fail.
func TestCapacityNeverExceeded(t *testing.T) {
	meter := &concurrencyMeter{Engine: stacktest.Builtin(t, builtin.Config{Latency: builtin.Latency{TTFT: 20e6, PerToken: 1e6}})}
	s := stacktest.Start(t, stacktest.WithEngines(meter), func(c *stack.Config) {
		c.Worker.MaxConcurrency = 2
		c.Worker.MaxQueue = 1
	})
	const n = 16
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range n {
		wg.Go(func() {
			resp, body, err := send("POST", s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody("teegate-builtin", i%2 == 0))
			if err != nil || resp.StatusCode != 200 || (i%2 == 0 && !strings.Contains(string(body), "[DONE]")) {
				failed.Add(1)
				if resp != nil {
					t.Errorf("request %d: %d %s", i, resp.StatusCode, body)
				} else {
					t.Errorf("request %d: %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed", failed.Load(), n)
	}
	if p := meter.peak.Load(); p != 2 {
		t.Fatalf("the engine served %d requests at once, want exactly its worker's max_concurrency 2", p)
	}
	if got := s.Workers[0].Served(); got != n {
		t.Fatalf("the worker took %d requests for %d sent: some were turned away busy and sent again", got, n)
	}
}

// devMaxConcurrency is teegate dev's default worker concurrency
// (cmd/teegate DevMaxConcurrency).
const devMaxConcurrency = 256

// 500 concurrent streams through a stack configured as teegate dev is
// (one worker, its default concurrency) all complete: none is refused as
// busy, each ends with [DONE].
func TestDevConcurrentStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("500 concurrent streams")
	}
	s := stacktest.Start(t, func(c *stack.Config) { c.Worker.MaxConcurrency = devMaxConcurrency })
	const n = 500
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range n {
		wg.Go(func() {
			resp, body, err := send("POST", s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody("teegate-builtin", true))
			if err != nil || resp.StatusCode != 200 || !strings.Contains(string(body), "data: [DONE]") {
				if failed.Add(1) <= 3 {
					if resp != nil {
						t.Errorf("stream %d: %d %.200s", i, resp.StatusCode, body)
					} else {
						t.Errorf("stream %d: %v", i, err)
					}
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d concurrent streams failed", f, n)
	}
}
