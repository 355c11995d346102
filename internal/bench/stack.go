package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/builtin"
	"github.com/teegate/teegate/worker/engine/openai"
)

// benchStack is the product under test: embedded NATS, gateway and one
// simulated-TEE worker (receipts on) per engine.
type benchStack struct {
	st   *stack.Stack
	key  string
	hold bool // serves held streams
}

func newKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "sk-bench-" + hex.EncodeToString(b)
}

// startStack starts a stack over engines; concurrency is each worker's
// bound on requests at once.
func startStack(ctx context.Context, dir string, engines []engine.Engine, concurrency int) (*benchStack, error) {
	key := newKey()
	st, err := stack.Start(ctx, stack.Config{
		DataDir: dir,
		APIKey:  key,
		Engines: engines,
		// The gateway's defaults, except a deadline that outlasts a run.
		Gateway: gateway.Config{RequestTimeout: time.Hour},
		Worker:  worker.Config{MaxConcurrency: concurrency, QueueWait: 30 * time.Second},
		// Quotes take no time: only the request path is measured.
		TEE: stack.TEEConfig{QuoteDelay: -1},
	})
	if err != nil {
		return nil, fmt.Errorf("starting the stack: %w", err)
	}
	return &benchStack{st: st, key: key}, nil
}

func (b *benchStack) Endpoint() (string, string) { return b.st.URL, b.key }

func (b *benchStack) Measure() (MemSample, error) { return SampleMemory(), nil }

func (b *benchStack) Close() error {
	// Held streams whose clients left are noticed at the gateway's next
	// keep-alive; a run does not wait for that.
	wait := 20 * time.Second
	if b.hold {
		wait = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	b.st.Close(ctx)
	return nil
}

// loadEngines are the stack's engines for the load runs: the openai
// engine over the upstream, and the builtin engine without latency.
func loadEngines(upstreamURL string) ([]engine.Engine, error) {
	oe, err := openai.New(openai.Config{BaseURL: upstreamURL})
	if err != nil {
		return nil, fmt.Errorf("building the openai engine: %w", err)
	}
	be, err := builtin.New(builtin.Config{ModelID: BuiltinModel})
	if err != nil {
		return nil, fmt.Errorf("building the builtin engine: %w", err)
	}
	return []engine.Engine{oe, be}, nil
}

// holdEngine sends a stream's first chunk at once and the next one an
// hour later: streams stay open until the client goes.
func holdEngine() (engine.Engine, error) {
	e, err := builtin.New(builtin.Config{ModelID: HoldModel, Latency: builtin.Latency{PerToken: time.Hour}})
	if err != nil {
		return nil, fmt.Errorf("building the holding engine: %w", err)
	}
	return e, nil
}

// startStreamStack starts a stack that serves HoldModel to streams
// clients at once.
func startStreamStack(ctx context.Context, dir string, streams int) (*benchStack, error) {
	e, err := holdEngine()
	if err != nil {
		return nil, err
	}
	b, err := startStack(ctx, dir, []engine.Engine{e}, streams+64)
	if err != nil {
		return nil, err
	}
	b.hold = true
	return b, nil
}

// inProcessStreams is the StreamServer used when no child process is
// given: a stack in this process.
func inProcessStreams(ctx context.Context, streams int) (StreamServer, func(), error) {
	dir, err := os.MkdirTemp("", "teegate-bench-streams-")
	if err != nil {
		return nil, nil, err
	}
	st, err := startStreamStack(ctx, dir, streams)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return st, func() { os.RemoveAll(dir) }, nil
}
