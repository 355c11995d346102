package worker

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/worker/wire"
)

// A probe of a request the connection took before it reconnected, or of
// one it no longer holds, is answered as the server answers for a request
// nobody holds, and the request is cancelled; a probe of a live request in
// the current generation is passed on, unanswered.
func TestControlAnswersProbesOfLostRequests(t *testing.T) {
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	wk, err := srv.Connect("worker")
	if err != nil {
		t.Fatal(err)
	}
	defer wk.Close()
	gw, err := srv.Connect("gateway")
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	c, err := newControl(wk)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if err := wk.Flush(); err != nil {
		t.Fatal(err)
	}
	var gen atomic.Uint64
	c.gen = gen.Load
	got := make(chan *nats.Msg, 8)
	subj, remove := c.add(func(m *nats.Msg) { got <- m })
	inbox := gw.NewInbox()
	// A channel, not SubscribeSync: NextMsg turns a no-responders status
	// into an error.
	replyCh := make(chan *nats.Msg, 8)
	if _, err := gw.ChanSubscribe(inbox, replyCh); err != nil {
		t.Fatal(err)
	}
	if err := gw.Flush(); err != nil {
		t.Fatal(err)
	}
	next := func(d time.Duration) (*nats.Msg, bool) {
		select {
		case m := <-replyCh:
			return m, true
		case <-time.After(d):
			return nil, false
		}
	}
	probe := func(subject string) {
		m := nats.NewMsg(subject)
		m.Reply = inbox
		m.Header.Set(wire.HdrAck, "0")
		if err := gw.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}

	probe(subj)
	select {
	case m := <-got:
		if m.Header.Get(wire.HdrCancel) != "" {
			t.Fatal("a live request was cancelled")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the probe was not passed on")
	}
	if m, ok := next(100 * time.Millisecond); ok {
		t.Fatalf("a live request's probe was answered: %v", m.Header)
	}

	gen.Add(1) // reconnected
	probe(subj)
	if m, ok := next(5 * time.Second); !ok || !wire.IsNoResponders(m) {
		t.Fatalf("probe after a reconnection: %v", m)
	}
	select {
	case m := <-got:
		if m.Header.Get(wire.HdrCancel) == "" {
			t.Fatal("the lost request was not cancelled")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the lost request heard nothing")
	}

	remove()
	probe(subj)
	if m, ok := next(5 * time.Second); !ok || !wire.IsNoResponders(m) {
		t.Fatalf("probe of a request no longer held: %v", m)
	}
	// Acks (no reply subject) are never answered.
	ack := nats.NewMsg(subj)
	ack.Header.Set(wire.HdrAck, "1")
	_ = gw.PublishMsg(ack)
	if m, ok := next(100 * time.Millisecond); ok {
		t.Fatalf("an ack was answered: %v", m.Header)
	}
}
