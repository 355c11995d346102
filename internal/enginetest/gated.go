package enginetest

import (
	"context"
	"io"
	"sync"
	"sync/atomic"

	"github.com/teegate/teegate/worker/engine"
)

// Gated serves one model whose streams emit exactly the payloads fed to
// Feed, end when Feed is closed, and close Closed when the worker closes
// the stream. Non-stream calls answer Body.
type Gated struct {
	Model  string
	Body   []byte
	Feed   chan []byte
	Closed chan struct{}
	// Infinite makes streams produce payloads without waiting for Feed.
	Infinite bool
	// Produced counts payloads handed to the worker.
	Produced atomic.Int64
	once     sync.Once
}

// NewGated returns a Gated engine for model.
func NewGated(model string) *Gated {
	return &Gated{Model: model, Body: []byte(`{"object":"chat.completion","choices":[]}`), Feed: make(chan []byte), Closed: make(chan struct{})}
}

func (g *Gated) Models(context.Context) ([]engine.Model, error) {
	return []engine.Model{{ID: g.Model, Object: "model", OwnedBy: "test"}}, nil
}

func (g *Gated) Do(_ context.Context, call engine.Call) (*engine.Result, error) {
	if !call.Stream {
		return &engine.Result{Body: g.Body}, nil
	}
	return &engine.Result{Stream: &gatedStream{g: g}}, nil
}

type gatedStream struct{ g *Gated }

var payload = []byte(`{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x"}}]}`)

func (s *gatedStream) Next(ctx context.Context) ([]byte, error) {
	if s.g.Infinite {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s.g.Produced.Add(1)
		return payload, nil
	}
	select {
	case p, ok := <-s.g.Feed:
		if !ok {
			return nil, io.EOF
		}
		s.g.Produced.Add(1)
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *gatedStream) Close() error {
	s.g.once.Do(func() { close(s.g.Closed) })
	return nil
}
