package worker

import (
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/worker/wire"
)

// control is a serving connection's control subjects: one wildcard
// subscription inside the connection's own inbox space, and a subject per
// request under it (prefix + "." + 128 random bits), so nobody can guess a
// request's subject to cancel it. It routes acks, cancels and the server's
// no-responders bounces to the request they name, and it stays subscribed
// until the connection's requests are all answered: the gateway's liveness
// probes of a request find a subscriber exactly as long as the connection
// that holds the request lives.
//
// One case the subscription cannot show: the connection's server went and
// it reconnected to another node of the cluster. The subscription is back,
// but the requests taken before cannot be answered any more: the right to
// reply to a request is kept by the server that delivered it (NATS
// response permissions), so every reply or chunk is refused. A probe of
// such a request (or of one the worker no longer holds: its answer was
// refused and it finished) is answered the way the server answers for a
// request nobody holds, a no-responders status, which the probe's own
// reply permission on the new server allows; the request, if it still
// runs, is cancelled. The gateway then fails the request over to another
// worker (before its first byte) or ends it as worker_gone (after).
type control struct {
	prefix string
	sub    *nats.Subscription
	nc     *nats.Conn
	// gen is the connection's generation: its reconnect count.
	gen func() uint64

	mu sync.Mutex
	m  map[string]ctlEntry
}

type ctlEntry struct {
	fn  func(*nats.Msg)
	gen uint64 // the generation the request was taken in
}

func newControl(nc *nats.Conn) (*control, error) {
	c := &control{prefix: nc.NewInbox(), nc: nc, m: map[string]ctlEntry{},
		gen: func() uint64 { return nc.Stats().Reconnects }}
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
	e, ok := c.m[tok]
	c.mu.Unlock()
	if m.Reply != "" && !wire.IsNoResponders(m) && (!ok || e.gen != c.gen()) {
		// A probe of a request this connection cannot answer (see above).
		lost := nats.NewMsg(m.Reply)
		lost.Header.Set("Status", "503")
		_ = c.nc.PublishMsg(lost)
		if ok {
			stop := nats.NewMsg(m.Subject)
			stop.Header.Set(wire.HdrCancel, "1")
			e.fn(stop)
		}
		return
	}
	if ok {
		e.fn(m)
	}
}

// add registers fn for a new control subject and returns the subject and
// the function that removes it. fn runs in the subscription's goroutine:
// it must not block.
func (c *control) add(fn func(*nats.Msg)) (string, func()) {
	tok := randomToken()
	c.mu.Lock()
	c.m[tok] = ctlEntry{fn: fn, gen: c.gen()}
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
