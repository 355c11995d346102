package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/wire"
)

// A request that asks for it gets an accept first, naming a control
// subject in the worker's inbox space; a probe there finds a subscriber
// while the worker lives and bounces (no responders) once it is killed.
func TestAcceptAndLiveness(t *testing.T) {
	h := start(t, worker.Config{})
	inbox := h.client.NewInbox()
	msgs := make(chan *nats.Msg, 16)
	sub, _ := h.client.ChanSubscribe(inbox, msgs)
	defer sub.Unsubscribe()
	req := streamRequest(8, inbox)
	req.Header.Set(wire.HdrAccept, "1")
	if err := h.client.PublishMsg(req); err != nil {
		t.Fatal(err)
	}
	a, err := wire.ParseAccept(<-msgs)
	if err != nil {
		t.Fatal(err)
	}
	if a.Worker != h.w.ID() || a.Control == "" {
		t.Fatalf("accept %+v", a)
	}
	probe := func() {
		m := nats.NewMsg(a.Control)
		m.Reply = inbox
		m.Header.Set(wire.HdrAck, "0")
		if err := h.client.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// While it lives: the probe is ignored, the stream goes on.
	probe()
	h.eng.Feed <- []byte(`{"choices":[]}`)
	if m := <-msgs; m.Header.Get(wire.HdrKind) != wire.KindData || m.Reply != a.Control {
		t.Fatalf("after a probe: %v reply %q", m.Header, m.Reply)
	}
	h.w.Kill()
	// The server forgets the connection's subscriptions a moment after it
	// closed: probe, as the gateway does, until a probe bounces.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for bounced := false; !bounced; {
		probe()
		select {
		case m := <-msgs:
			bounced = wire.IsNoResponders(m)
		case <-tick.C:
		}
	}
	waitClosed(t, h.eng, 10*time.Second)
}

// Drain stops taking requests, lets the one in flight finish and then
// leaves; a request sent after the drain began finds no responder.
func TestDrainFinishesInFlight(t *testing.T) {
	h := start(t, worker.Config{})
	inbox := h.client.NewInbox()
	msgs := make(chan *nats.Msg, 16)
	sub, _ := h.client.ChanSubscribe(inbox, msgs)
	defer sub.Unsubscribe()
	if err := h.client.PublishMsg(streamRequest(8, inbox)); err != nil {
		t.Fatal(err)
	}
	h.eng.Feed <- []byte(`{"n":1}`)
	<-msgs
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n, err := h.w.Drain(ctx)
		done <- result{n, err}
	}()
	stacktest.Eventually(t, 10*time.Second, h.w.Draining, "the drain to start")
	// New work finds nobody once the unsubscription is through.
	for {
		_, err := h.client.Request(wire.InferSubject("m"), nil, 5*time.Second)
		if errors.Is(err, nats.ErrNoResponders) {
			break
		}
	}
	select {
	case r := <-done:
		t.Fatalf("drain returned with a request in flight: %+v", r)
	default:
	}
	h.eng.Feed <- []byte(`{"n":2}`)
	close(h.eng.Feed)
	var kinds []string
	for len(kinds) == 0 || kinds[len(kinds)-1] == wire.KindData {
		kinds = append(kinds, (<-msgs).Header.Get(wire.HdrKind))
	}
	if len(kinds) != 2 || kinds[1] != wire.KindEnd {
		t.Fatalf("the stream in flight ended with %v", kinds)
	}
	if r := <-done; r.n != 0 || r.err != nil {
		t.Fatalf("drain: %+v", r)
	}
}

// Drain with a grace period that ends first reports what it abandoned.
func TestDrainGraceEnds(t *testing.T) {
	h := start(t, worker.Config{})
	inbox := h.client.NewInbox()
	sub, _ := h.client.SubscribeSync(inbox)
	defer sub.Unsubscribe()
	if err := h.client.PublishMsg(streamRequest(8, inbox)); err != nil {
		t.Fatal(err)
	}
	stacktest.Eventually(t, 10*time.Second, func() bool { return h.w.InFlight() == 1 }, "the request to be in flight")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	n, err := h.w.Drain(ctx)
	if n != 1 {
		t.Fatalf("abandoned %d (%v), want 1", n, err)
	}
}

// Idle closes once nothing was served for d, counted from the end of the
// last request, and not while a request is in flight.
func TestIdle(t *testing.T) {
	h := start(t, worker.Config{})
	const d = 30 * time.Millisecond
	inbox := h.client.NewInbox()
	msgs := make(chan *nats.Msg, 16)
	sub, _ := h.client.ChanSubscribe(inbox, msgs)
	defer sub.Unsubscribe()
	if err := h.client.PublishMsg(streamRequest(8, inbox)); err != nil {
		t.Fatal(err)
	}
	h.eng.Feed <- []byte(`{"n":1}`)
	<-msgs
	idle := h.w.Idle(d)
	select {
	case <-idle:
		t.Fatal("idle with a request in flight")
	case <-time.After(4 * d):
	}
	close(h.eng.Feed)
	<-msgs
	stacktest.Eventually(t, 10*time.Second, func() bool { return h.w.InFlight() == 0 }, "the request to end")
	ended := time.Now()
	<-idle
	if since := time.Since(ended); since < d-5*time.Millisecond {
		t.Fatalf("idle %v after the last request, want at least %v", since, d)
	}
}
