package worker

import (
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
)

// control is a serving connection's control subjects: one wildcard
// subscription inside the connection's own inbox space, and a subject per
// request under it (prefix + "." + 128 random bits), so nobody can guess a
// request's subject to cancel it. It routes acks, cancels and the server's
// no-responders bounces to the request they name, and it stays subscribed
// until the connection's requests are all answered: the gateway's liveness
// probes of a request find a subscriber exactly as long as the connection
// that holds the request lives.
type control struct {
	prefix string
	sub    *nats.Subscription

	mu sync.Mutex
	m  map[string]func(*nats.Msg)
}

func newControl(nc *nats.Conn) (*control, error) {
	c := &control{prefix: nc.NewInbox(), m: map[string]func(*nats.Msg){}}
	sub, err := nc.Subscribe(c.prefix+".*", c.route)
	if err != nil {
		return nil, fmt.Errorf("subscribing for control messages: %w", err)
	}
	c.sub = sub
	return c, nil
}

func (c *control) route(m *nats.Msg) {
	tok := m.Subject[len(c.prefix)+1:]
	c.mu.Lock()
	fn := c.m[tok]
	c.mu.Unlock()
	if fn != nil {
		fn(m)
	}
}

// add registers fn for a new control subject and returns the subject and
// the function that removes it. fn runs in the subscription's goroutine:
// it must not block.
func (c *control) add(fn func(*nats.Msg)) (string, func()) {
	tok := randomToken()
	c.mu.Lock()
	c.m[tok] = fn
	c.mu.Unlock()
	return c.prefix + "." + tok, func() {
		c.mu.Lock()
		delete(c.m, tok)
		c.mu.Unlock()
	}
}

func (c *control) close() {
	if c != nil && c.sub != nil {
		_ = c.sub.Unsubscribe()
	}
}
