package stacktest

import (
	"context"
	"testing"
	"time"

	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/builtin"
)

// APIKey is the key every test stack accepts.
const APIKey = "sk-test"

// Option adjusts the stack config before start.
type Option func(*stack.Config)

// WithEngines replaces the default builtin engine.
func WithEngines(e ...engine.Engine) Option {
	return func(c *stack.Config) { c.Engines = e }
}

// WithPolicy sets the admission policy: "dev" (the default, admits the
// simulated TEE), "production" (refuses it) or a .rego file.
func WithPolicy(nameOrPath string) Option {
	return func(c *stack.Config) { c.Policy = nameOrPath }
}

// Builtin returns a builtin engine or fails the test.
func Builtin(t testing.TB, cfg builtin.Config) *builtin.Engine {
	t.Helper()
	e, err := builtin.New(cfg)
	if err != nil {
		t.Fatalf("building builtin engine: %v", err)
	}
	return e
}

// Start starts a stack and registers its shutdown.
func Start(t testing.TB, opts ...Option) *stack.Stack {
	t.Helper()
	// Quotes are instant in tests unless a test asks for realistic ones.
	cfg := stack.Config{DataDir: t.TempDir(), APIKey: APIKey, TEE: stack.TEEConfig{QuoteDelay: -1}}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.Engines == nil {
		cfg.Engines = []engine.Engine{Builtin(t, builtin.Config{})}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := stack.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("starting stack: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

// Eventually polls cond until it holds or the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}
