package gateway

import (
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/worker/wire"
)

// The gateway's own connection to the bus. While it is down (its server
// died, the network broke) the gateway's inboxes have no interest on any
// server, so replies and chunks sent meanwhile are lost for good, even
// after the client reconnects to another node. A request waiting for an
// answer therefore ends as soon as the connection it was sent on leaves
// CONNECTED, with a retryable 503 (errBusLost), instead of waiting for its
// deadline; a request that arrives while the connection is down is refused
// the same way at once instead of sitting in the client's reconnect buffer.

// busWatchRecheck bounds how long a missed status event (nats.go drops
// them when a listener's buffer is full) can go unnoticed.
const busWatchRecheck = time.Second

// busWatch follows one connection's status in generations: each period in
// CONNECTED on one server connection is one, with a channel closed when it
// ends. The connection's reconnect count tells a blip (down and up again
// before the watch looked) from no change at all.
type busWatch struct {
	mu        sync.Mutex
	up        bool
	reconnect uint64
	lost      chan struct{}
}

// watchBus follows nc until it is closed.
func watchBus(nc *nats.Conn) *busWatch {
	b := &busWatch{lost: make(chan struct{})}
	if nc == nil {
		close(b.lost)
		return b
	}
	// Listen before reading the status, so no change is missed.
	ch := nc.StatusChanged()
	b.up, b.reconnect = nc.Status() == nats.CONNECTED, nc.Stats().Reconnects
	if !b.up {
		close(b.lost)
	}
	go func() {
		defer nc.RemoveStatusListener(ch)
		t := time.NewTicker(busWatchRecheck)
		defer t.Stop()
		for {
			select {
			case <-ch:
			case <-t.C:
			}
			st := nc.Status()
			b.set(st == nats.CONNECTED, nc.Stats().Reconnects)
			if st == nats.CLOSED {
				return
			}
		}
	}()
	return b
}

// set records the status: a generation ends when the connection is down
// or has reconnected since it began; a new one begins when it is up.
func (b *busWatch) set(up bool, reconnects uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.up && (!up || reconnects != b.reconnect) {
		close(b.lost)
		b.up = false
	}
	if up && !b.up {
		b.lost = make(chan struct{})
		b.up = true
	}
	b.reconnect = reconnects
}

// current reports whether the connection is up and returns the channel
// that closes when this generation ends (closed already when it is down).
func (b *busWatch) current() (bool, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.up, b.lost
}

func (g *Gateway) bus() *busWatch {
	g.busOnce.Do(func() { g.busW = watchBus(g.cfg.Conn) })
	return g.busW
}

// errBusDown: the gateway's connection was down when a request was to be
// sent, or went down while it waited.
var errBusDown = errors.New("the gateway's bus connection is down")

// errBusLost: the gateway is (or was, while the request waited) cut off
// from the bus; another attempt goes over the connection it has by then.
func errBusLost() *APIError {
	return wire.Errorf(wire.CodeBusDown, "The gateway lost its connection to the workers while handling this request. Please retry.")
}
