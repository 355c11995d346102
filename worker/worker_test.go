package worker_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/teegate/teegate/internal/enginetest"
	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine"))
}

type harness struct {
	client *nats.Conn // plays the gateway
	wconn  *nats.Conn // the worker's connection
	eng    *enginetest.Gated
	w      *worker.Worker
}

func start(t *testing.T, cfg worker.Config) *harness {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	client, err := srv.Connect("gateway")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	wconn, err := srv.Connect("worker")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wconn.Close)
	eng := enginetest.NewGated("m")
	cfg.Conn = wconn
	if cfg.Engine == nil {
		cfg.Engine = eng
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
	return &harness{client: client, wconn: wconn, eng: eng, w: w}
}

func streamRequest(window int, inbox string) *nats.Msg {
	m := nats.NewMsg(wire.InferSubject("m"))
	m.Reply = inbox
	m.Header.Set(wire.HdrVersion, wire.Version)
	m.Header.Set(wire.HdrOp, wire.OpChat)
	m.Header.Set(wire.HdrStream, "1")
	m.Header.Set(wire.HdrRequestID, "req_test")
	m.Header.Set(wire.HdrWindow, strconv.Itoa(window))
	m.Data = []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`)
	return m
}

func waitClosed(t *testing.T, g *enginetest.Gated, d time.Duration) {
	t.Helper()
	select {
	case <-g.Closed:
	case <-time.After(d):
		t.Fatal("the worker did not close the engine stream")
	}
}

// A client that reads nothing gets exactly one window of chunks: the worker
// does not buffer more, and gives the stream up after AckTimeout.
func TestStreamFlowControlBoundsBuffering(t *testing.T) {
	h := start(t, worker.Config{AckTimeout: 300 * time.Millisecond})
	h.eng.Infinite = true
	const window = 8
	inbox := h.client.NewInbox()
	var got atomic.Int64
	sub, err := h.client.Subscribe(inbox, func(m *nats.Msg) {
		if m.Header.Get(wire.HdrKind) == wire.KindData {
			got.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := h.client.PublishMsg(streamRequest(window, inbox)); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, h.eng, 10*time.Second)
	// Everything the worker published before closing is ordered before this
	// marker on its connection.
	marker := make(chan struct{})
	msub, _ := h.client.Subscribe(inbox+".marker", func(*nats.Msg) { close(marker) })
	defer msub.Unsubscribe()
	_ = h.client.Flush()
	_ = h.wconn.Publish(inbox+".marker", nil)
	<-marker
	_ = h.client.Flush()
	if n := got.Load(); n != window {
		t.Fatalf("client received %d chunks without acking, want exactly the window %d", n, window)
	}
	if p := h.eng.Produced.Load(); p > window+1 {
		t.Fatalf("engine produced %d payloads for a window of %d", p, window)
	}
}

// Acks release the window: a client that acks receives the whole stream.
func TestStreamAcksKeepItFlowing(t *testing.T) {
	h := start(t, worker.Config{AckTimeout: time.Minute})
	const window, total = 4, 50
	inbox := h.client.NewInbox()
	msgs := make(chan *nats.Msg, 64)
	sub, _ := h.client.ChanSubscribe(inbox, msgs)
	defer sub.Unsubscribe()
	_ = h.client.PublishMsg(streamRequest(window, inbox))
	go func() {
		for i := 0; i < total; i++ {
			h.eng.Feed <- []byte(strconv.Itoa(i))
		}
		close(h.eng.Feed)
	}()
	for seq := 1; ; seq++ {
		m := <-msgs
		if got := m.Header.Get(wire.HdrSeq); got != strconv.Itoa(seq) {
			t.Fatalf("seq %s, want %d", got, seq)
		}
		if m.Header.Get(wire.HdrKind) == wire.KindEnd {
			if seq != total+1 {
				t.Fatalf("end after %d chunks, want %d", seq-1, total)
			}
			return
		}
		if string(m.Data) != strconv.Itoa(seq-1) {
			t.Fatalf("payload %q at seq %d", m.Data, seq)
		}
		ack := nats.NewMsg(m.Reply)
		ack.Header.Set(wire.HdrAck, strconv.Itoa(seq))
		_ = h.client.PublishMsg(ack)
	}
}

// A cancel message from the gateway stops generation.
func TestStreamCancel(t *testing.T) {
	h := start(t, worker.Config{AckTimeout: time.Minute})
	inbox := h.client.NewInbox()
	msgs := make(chan *nats.Msg, 8)
	sub, _ := h.client.ChanSubscribe(inbox, msgs)
	defer sub.Unsubscribe()
	_ = h.client.PublishMsg(streamRequest(8, inbox))
	h.eng.Feed <- []byte("first")
	m := <-msgs
	c := nats.NewMsg(m.Reply)
	c.Header.Set(wire.HdrCancel, "1")
	_ = h.client.PublishMsg(c)
	waitClosed(t, h.eng, 10*time.Second)
}

// When the requester's inbox disappears, the next chunk comes back as "no
// responders" and the worker stops.
func TestStreamStopsWhenInboxGone(t *testing.T) {
	h := start(t, worker.Config{AckTimeout: time.Minute})
	inbox := h.client.NewInbox()
	msgs := make(chan *nats.Msg, 8)
	sub, _ := h.client.ChanSubscribe(inbox, msgs)
	_ = h.client.PublishMsg(streamRequest(8, inbox))
	h.eng.Feed <- []byte("first")
	<-msgs
	_ = sub.Unsubscribe()
	_ = h.client.Flush()
	h.eng.Feed <- []byte("second")
	// The worker learns of the missing inbox from the server, then stops.
	for {
		select {
		case <-h.eng.Closed:
			return
		case h.eng.Feed <- []byte("more"):
		case <-time.After(10 * time.Second):
			t.Fatal("worker kept streaming to a vanished inbox")
		}
	}
}

func TestVersionMismatchRefused(t *testing.T) {
	h := start(t, worker.Config{})
	m := nats.NewMsg(wire.InferSubject("m"))
	m.Header.Set(wire.HdrVersion, "99")
	m.Header.Set(wire.HdrOp, wire.OpChat)
	reply, err := h.client.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if reply.Header.Get(wire.HdrError) != wire.CodeVersion || reply.Header.Get(wire.HdrStatus) != "503" {
		t.Fatalf("got %v", reply.Header)
	}
}

func TestBusyWorkerSaysSo(t *testing.T) {
	h := start(t, worker.Config{MaxConcurrency: 1, QueueWait: 100 * time.Millisecond, AckTimeout: time.Minute})
	inbox := h.client.NewInbox()
	msgs := make(chan *nats.Msg, 8)
	sub, _ := h.client.ChanSubscribe(inbox, msgs)
	defer sub.Unsubscribe()
	_ = h.client.PublishMsg(streamRequest(8, inbox)) // occupies the only slot
	h.eng.Feed <- []byte("first")
	<-msgs
	m := nats.NewMsg(wire.InferSubject("m"))
	m.Header.Set(wire.HdrVersion, wire.Version)
	m.Header.Set(wire.HdrOp, wire.OpChat)
	reply, err := h.client.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if reply.Header.Get(wire.HdrError) != wire.CodeBusy {
		t.Fatalf("got %v", reply.Header)
	}
	close(h.eng.Feed)
}

// A request that finds the worker full waits for a slot instead of failing.
func TestQueuedRequestWaitsForSlot(t *testing.T) {
	h := start(t, worker.Config{MaxConcurrency: 1, AckTimeout: time.Minute})
	inbox := h.client.NewInbox()
	msgs := make(chan *nats.Msg, 8)
	sub, _ := h.client.ChanSubscribe(inbox, msgs)
	defer sub.Unsubscribe()
	_ = h.client.PublishMsg(streamRequest(8, inbox)) // occupies the only slot
	h.eng.Feed <- []byte("first")
	<-msgs
	m := nats.NewMsg(wire.InferSubject("m"))
	m.Header.Set(wire.HdrVersion, wire.Version)
	m.Header.Set(wire.HdrOp, wire.OpChat)
	done := make(chan *nats.Msg, 1)
	go func() {
		r, err := h.client.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	close(h.eng.Feed) // the stream ends, freeing the slot
	r := <-done
	if r == nil || r.Header.Get(wire.HdrStatus) != "200" {
		t.Fatalf("queued request got %v", r)
	}
}

// closeWatch is an engine whose stream's Close looks, once the bus has
// delivered everything the worker published so far, whether the stream's
// end has reached the gateway already (early).
type closeWatch struct {
	*enginetest.Gated
	h      *harness
	msgs   chan *nats.Msg // the gateway's inbox
	got    []*nats.Msg    // what Close took from msgs
	early  bool
	closed chan struct{}
}

func (c *closeWatch) Do(ctx context.Context, call engine.Call) (*engine.Result, error) {
	res, err := c.Gated.Do(ctx, call)
	if err == nil && res.Stream != nil {
		res.Stream = &watchedStream{Stream: res.Stream, c: c}
	}
	return res, err
}

type watchedStream struct {
	engine.Stream
	c *closeWatch
}

func (s *watchedStream) Close() error {
	err := s.Stream.Close()
	c := s.c
	// A flush of the worker's connection, then of the gateway's, delivers
	// to the inbox all the worker published before this Close.
	if c.h.wconn.Flush() != nil || c.h.client.Flush() != nil {
		panic("flushing")
	}
	for len(c.msgs) > 0 {
		m := <-c.msgs
		c.got = append(c.got, m)
		c.early = c.early || m.Header.Get(wire.HdrKind) == wire.KindEnd
	}
	close(c.closed)
	return err
}

// A worker gives a request's slot back before its final answer: the
// engine's stream is closed before its end is sent, and a gateway that
// sends its next request as soon as it has a final answer (it counts the
// slot free then) finds the slot free, so the request is not queued.
// QueueWait is a nanosecond: one that had to queue would be answered busy.
func TestSlotFreeBeforeFinalAnswer(t *testing.T) {
	cw := &closeWatch{Gated: enginetest.NewGated("m"), msgs: make(chan *nats.Msg, 8), closed: make(chan struct{})}
	h := start(t, worker.Config{MaxConcurrency: 1, QueueWait: time.Nanosecond, AckTimeout: time.Minute, Engine: cw})
	cw.h = h
	inbox := h.client.NewInbox()
	sub, _ := h.client.ChanSubscribe(inbox, cw.msgs)
	defer sub.Unsubscribe()
	_ = h.client.PublishMsg(streamRequest(8, inbox)) // takes the only slot
	cw.Feed <- []byte("first")
	close(cw.Feed) // the stream ends after its chunk
	<-cw.closed
	if cw.early {
		t.Fatal("the stream's end was sent before the engine's stream was closed (its slot still held)")
	}
	ended := false
	for _, m := range cw.got {
		ended = ended || m.Header.Get(wire.HdrKind) == wire.KindEnd
	}
	for !ended {
		ended = (<-cw.msgs).Header.Get(wire.HdrKind) == wire.KindEnd
	}
	unary := func() *nats.Msg {
		m := nats.NewMsg(wire.InferSubject("m"))
		m.Header.Set(wire.HdrVersion, wire.Version)
		m.Header.Set(wire.HdrOp, wire.OpChat)
		r, err := h.client.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// After the stream's end, then after each reply: the next request is
	// served, never turned away.
	for i := range 3 {
		if r := unary(); r.Header.Get(wire.HdrStatus) != "200" {
			t.Fatalf("request %d after a final answer: %v", i, r.Header)
		}
	}
}
