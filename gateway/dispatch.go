package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/worker/wire"
)

// validNonce: UTF-8 text without control characters.
func validNonce(n string) bool {
	if !utf8.ValidString(n) {
		return false
	}
	for _, r := range n {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// Client-facing headers that carry attestation material.
const (
	HeaderReceipt    = attest.HeaderReceipt
	HeaderEvidenceID = attest.HeaderEvidenceID
	HeaderNonce      = attest.HeaderNonce
	HeaderInline     = attest.HeaderInlineEvidence
	HeaderWorker     = "Teegate-Worker"
)

// keepAlive is how often an idle stream gets an SSE comment, which also
// detects clients that went away.
const keepAlive = 15 * time.Second

func (g *Gateway) infer(op string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		obs := g.track(c, op)
		if g.shed.full() {
			return send(c, errOverloaded())
		}
		p, apiErr := validate(op, c.Body())
		if apiErr != nil {
			return send(c, apiErr)
		}
		reqID, _ := c.Locals(localReqID).(string)
		key := keyOf(c)
		rq := &inflight{key: key, id: reqID, model: p.Model, stream: p.Stream}
		// The key's model list comes first: a model the key may not use
		// is not revealed, not even as unavailable.
		if !key.MayUse(p.Model) {
			e := errModelNotFound(p.Model)
			return g.finish(c, reqID, send(c, e), e.Status)
		}
		wait, e := g.route(p.Model)
		if e != nil {
			return g.finish(c, reqID, send(c, e), e.Status)
		}
		release, e := g.shed.acquire(p.Model)
		if e != nil {
			return g.finish(c, reqID, send(c, e), e.Status)
		}
		// A stream's relay releases its slot when it ends (rq.free).
		rq.release = release
		defer rq.freeUnlessRelayed()
		g.routed(obs, p.Model)
		if e := g.admit(c, rq); e != nil {
			return g.finish(c, reqID, send(c, e), e.Status)
		}
		start, _ := c.Locals(localStart).(time.Time)
		deadline := start.Add(g.cfg.RequestTimeout)
		if wait {
			if e := g.awaitWorker(p.Model, reqID, deadline); e != nil {
				return g.finish(c, reqID, send(c, e), e.Status)
			}
		}
		// fasthttp reuses the body buffer after the handler returns. Every
		// publish of the request (failover included) happens before the
		// first byte of the answer, inside the handler, and the NATS client
		// copies what it publishes: the body is forwarded without a copy
		// of our own, and nothing keeps it.
		r := &wire.Request{ID: reqID, Op: op, Model: p.Model, Tenant: key.Tenant, Stream: p.Stream, Deadline: deadline,
			Inline: c.Get(HeaderInline) != "", Accept: true, Body: c.Body()}
		if p.Stream {
			r.Window = g.cfg.StreamWindow
		}
		if n := c.Get(HeaderNonce); n != "" {
			if len(n) > 256 {
				return send(c, errInvalid("Teegate-Nonce", "The Teegate-Nonce header is longer than 256 bytes."))
			}
			if !validNonce(n) {
				// Receipts carry the nonce as UTF-8 text: other bytes would be
				// recorded lossily, and distinct nonces would collide.
				return send(c, errInvalid("Teegate-Nonce", "The Teegate-Nonce header must be UTF-8 text without control characters."))
			}
			r.Nonce = n
		}
		var span func(nats.Header)
		if obs != nil && obs.span != nil {
			span = func(h nats.Header) { injectTrace(obs.span, h) }
		} else {
			r.Traceparent = c.Get("traceparent")
		}
		return g.dispatch(c, r, span, deadline, rq)
	}
}

// attempt is one dispatch of a request to one worker: its own inbox (so a
// late answer of an earlier attempt, sent to an inbox nobody listens on any
// more, can never reach the client) and the receiver that knows the
// request's control subject once the worker accepted.
type attempt struct {
	sub      *nats.Subscription
	ch       chan *nats.Msg
	rx       *wire.StreamReceiver
	lease    *lease // the replica's slot (pick.go), given back by close
	accepted bool
	// lost closes when the gateway's connection the request went out on
	// goes down (buswatch.go): its answer can no longer arrive.
	lost <-chan struct{}
}

func (a *attempt) close() {
	if a.sub != nil {
		_ = a.sub.Unsubscribe()
	}
	a.lease.Release()
}

// Why an attempt ended before any byte of an answer.
var (
	// errNobody: the server bounced the request itself: nothing
	// subscribes to the subject it was sent to.
	errNobody = errors.New("no worker took the request")
	// errLost: the worker holding the request is gone (a liveness probe
	// bounced), or none accepted it in time.
	errLost = errors.New("the request was lost with its worker")
)

// open sends msg with a fresh inbox to the replica l names; the attempt
// holds l until it is closed.
func (g *Gateway) open(msg *nats.Msg, l *lease, size int, events bool) (*attempt, error) {
	inbox := g.newInbox()
	a := &attempt{ch: make(chan *nats.Msg, size), lease: l}
	sub, err := g.cfg.Conn.ChanSubscribe(inbox, a.ch)
	if err != nil {
		l.Release()
		return nil, fmt.Errorf("subscribing for a reply: %w", err)
	}
	a.sub = sub
	a.rx = wire.NewStreamReceiver(g.cfg.Conn.PublishMsg, inbox, g.cfg.StreamWindow, events)
	msg.Reply = inbox
	up, lost := g.bus().current()
	if !up {
		a.close()
		return nil, errBusDown
	}
	a.lost = lost
	if err := g.cfg.Conn.PublishMsg(msg); err != nil {
		a.close()
		return nil, fmt.Errorf("publishing a request: %w", err)
	}
	return a, nil
}

// await returns the attempt's first message after the worker's accept: the
// reply of a non-stream request, the first message of a stream. Meanwhile
// it probes the accepted request's control subject every DispatchProbe:
// a bounce means the worker's connection is gone (errLost). A request sent
// to a replica by its key (a worker of this version, which accepts every
// request at once) that gets no accept and no answer within AcceptTimeout
// is errLost too: the worker died holding it, unless there is nowhere to
// fail over to while its record is still live (onlyChoice): then it waits
// on, a worker reading its requests late under load is no lost one. One
// sent on the queue group may have reached a worker from before accepts,
// so it waits for its answer. The deadline cancels.
func (g *Gateway) await(a *attempt, reqID, model string, tried map[string]bool, deadline time.Time) (*nats.Msg, error) {
	dl := time.NewTimer(time.Until(deadline))
	defer dl.Stop()
	var acceptBy <-chan time.Time
	var acceptTimer *time.Timer
	late := false // logged once that the accept is late
	if a.lease != nil && a.lease.Key != "" {
		acceptTimer = time.NewTimer(g.cfg.AcceptTimeout)
		defer acceptTimer.Stop()
		acceptBy = acceptTimer.C
	}
	var probe *time.Ticker
	var probes <-chan time.Time
	defer func() {
		if probe != nil {
			probe.Stop()
		}
	}()
	busGone := false // the connection went; what it delivered before is still read
	for {
		if busGone && len(a.ch) == 0 {
			return nil, errBusDown
		}
		select {
		case m := <-a.ch:
			if wire.IsNoResponders(m) {
				if a.accepted {
					return nil, errLost
				}
				return nil, errNobody
			}
			if m.Header.Get(wire.HdrKind) != wire.KindAccept {
				return m, nil
			}
			if a.accepted {
				return nil, fmt.Errorf("%w: a second accept", errBadReply)
			}
			if _, err := wire.ParseAccept(m); err != nil {
				return nil, err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			control, err := g.ackSubject(ctx, m)
			cancel()
			if err != nil {
				// Nothing is published to a subject the worker may not own.
				return nil, err
			}
			a.rx.SetControl(control)
			a.accepted = true
			acceptBy = nil
			probe = time.NewTicker(g.cfg.DispatchProbe)
			probes = probe.C
		case <-a.lost:
			// What came in before the connection went is still read.
			a.lost, busGone = nil, true
			continue
		case <-acceptBy:
			if !g.onlyChoice(model, a.lease.Key, tried) {
				return nil, errLost
			}
			if !late {
				late = true
				g.log.Info("no accept yet from the only replica that may serve the request; waiting on", "request_id", reqID)
			}
			acceptTimer.Reset(g.cfg.AcceptTimeout)
		case <-probes:
			a.rx.Probe()
		case <-dl.C:
			a.rx.Cancel()
			return nil, context.DeadlineExceeded
		}
	}
}

// dispatch sends a request to workers until one answers. A worker that is
// busy makes it try another (up to Attempts in all), or the same one once a
// slot may have freed when no other is left; a request whose worker
// went away before the first byte of its answer is dispatched once more
// (failover); a request sent to a worker whose subject has no subscriber any
// more tries another worker (Attempts). Only the attempt that answers is
// relayed: each has its own inbox, closed when the attempt is abandoned, so
// a client never gets two answers. After the first byte a lost worker ends
// the stream with an error (relay).
func (g *Gateway) dispatch(c *fiber.Ctx, r *wire.Request, span func(nats.Header), deadline time.Time, rq *inflight) error {
	reqID := rq.id
	events := r.Op == wire.OpResponses
	pctx, pcancel := context.WithDeadline(context.Background(), deadline)
	defer pcancel()
	tried := map[string]bool{} // replicas that failed this request
	failedOver := false
	for tries := 1; ; tries++ {
		l, ok := g.awaitLease(pctx, r.Model, tried)
		if !ok {
			return g.finish(c, reqID, send(c, errNoCapacity()), http.StatusServiceUnavailable)
		}
		key := l.Key
		msg := r.Msg(l.Subject)
		if span != nil {
			span(msg.Header)
		}
		size := 4
		if r.Stream {
			// Capacity beyond the window: the worker never has more than
			// window data chunks unacknowledged, plus one end or error
			// message and the accept.
			size = g.cfg.StreamWindow + 8
		}
		a, err := g.open(msg, l, size, events)
		if errors.Is(err, errBusDown) {
			return g.finish(c, reqID, send(c, errBusLost()), http.StatusServiceUnavailable)
		}
		if err != nil {
			g.log.Error("forwarding request failed", "request_id", reqID, "err", err)
			return g.finish(c, reqID, send(c, errNoCapacity()), http.StatusServiceUnavailable)
		}
		first, err := g.await(a, reqID, r.Model, tried, deadline)
		retry, busy := false, false
		switch {
		case err == nil:
			retry = first.Header.Get(wire.HdrKind) == wire.KindError && wire.Retryable(first.Header.Get(wire.HdrError))
			if retry && tries >= g.cfg.Attempts {
				a.close()
				return g.finish(c, reqID, send(c, errNoCapacity()), http.StatusServiceUnavailable)
			}
			if retry {
				g.metrics.redispatched("busy")
				busy = true
			}
		case errors.Is(err, errNobody):
			// On the queue group nobody serves the model at all; a replica
			// named by its key has gone (its record outlived its
			// connection), and another may serve.
			if key == "" || tries >= g.cfg.Attempts {
				a.close()
				return g.finish(c, reqID, send(c, errNoCapacity()), http.StatusServiceUnavailable)
			}
			retry = true
			g.metrics.redispatched("gone")
		case errors.Is(err, errLost):
			if failedOver {
				a.close()
				g.log.Warn("request lost with its worker twice", "request_id", reqID)
				return g.finish(c, reqID, send(c, errWorkerGone()), http.StatusBadGateway)
			}
			failedOver, retry = true, true
			reason := "lost"
			if !a.accepted {
				reason = "no_accept"
			}
			g.metrics.redispatched(reason)
			g.log.Warn("worker went away before answering; dispatching the request once more", "request_id", reqID, "reason", reason)
		case errors.Is(err, errBusDown):
			a.close()
			return g.finish(c, reqID, send(c, errBusLost()), http.StatusServiceUnavailable)
		case errors.Is(err, context.DeadlineExceeded):
			a.close()
			return g.finish(c, reqID, send(c, errDeadline()), http.StatusGatewayTimeout)
		default:
			a.close()
			g.log.Warn("refusing a worker reply", "request_id", reqID, "err", err)
			return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
		}
		if retry {
			// A busy replica that is all the request has left is tried
			// again once a slot may have freed (onlyChoice).
			again := busy && g.onlyChoice(r.Model, key, tried)
			a.close()
			if again {
				g.awaitSlot(pctx)
				continue
			}
			if key != "" {
				tried[key] = true
			}
			continue
		}
		if r.Stream {
			return g.stream(c, a, first, deadline, rq, events)
		}
		a.close()
		return g.unary(c, first, rq)
	}
}

// unary relays a non-stream reply.
func (g *Gateway) unary(c *fiber.Ctx, m *nats.Msg, rq *inflight) error {
	reqID := rq.id
	reply, err := wire.ParseReply(m)
	if err != nil {
		g.log.Warn("refusing a worker reply", "request_id", reqID, "err", err)
		return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
	}
	var sr *attest.SignedReceipt
	success := reply.Kind == wire.KindResponse
	if success && !g.cfg.Unattested {
		if sr, err = checkReceipt(m.Header, reqID); err != nil {
			g.log.Warn("refusing a success without a receipt", "request_id", reqID, "err", err)
			return g.finish(c, reqID, send(c, errNoReceipt()), http.StatusBadGateway)
		}
	}
	copyAttestation(c, m.Header)
	if sr != nil {
		g.answered(rq, reply.Worker, sr)
	} else {
		g.storeHeaderReceipt(reqID, m.Header)
	}
	if reply.Status == http.StatusServiceUnavailable || reply.Status == http.StatusTooManyRequests {
		c.Set(fiber.HeaderRetryAfter, "1")
	}
	c.Set(fiber.HeaderContentType, reply.ContentType)
	return g.finish(c, reqID, c.Status(reply.Status).Send(reply.Body), reply.Status)
}

func copyAttestation(c *fiber.Ctx, h nats.Header) {
	if v := h.Get(wire.HdrReceipt); v != "" {
		c.Set(HeaderReceipt, v)
	}
	if v := h.Get(wire.HdrEvidenceID); v != "" {
		c.Set(HeaderEvidenceID, v)
	}
	if v := h.Get(wire.HdrWorker); v != "" {
		c.Set(HeaderWorker, v)
	}
}

func (g *Gateway) finish(c *fiber.Ctx, reqID string, err error, status int) error {
	g.log.Info("request", "request_id", reqID, "path", c.Path(), "status", status)
	return err
}

// stream answers a stream request from its attempt's first message: an
// error reply, or an SSE response whose chunks a stream writer relays,
// flushing each one.
//
// events marks a Responses API stream: its chunks are named SSE events
// (wire.HdrEvent), its errors are "error" events, and it ends without
// "data: [DONE]", as OpenAI's does.
func (g *Gateway) stream(c *fiber.Ctx, a *attempt, first *nats.Msg, deadline time.Time, rq *inflight, events bool) error {
	reqID := rq.id
	switch first.Header.Get(wire.HdrKind) {
	case wire.KindError:
		a.close()
		reply, err := wire.ParseReply(first)
		if err != nil {
			g.log.Warn("refusing a worker stream", "request_id", reqID, "err", err)
			return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
		}
		if reply.Status == http.StatusServiceUnavailable {
			c.Set(fiber.HeaderRetryAfter, "1")
		}
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return g.finish(c, reqID, c.Status(reply.Status).Send(reply.Body), reply.Status)
	case wire.KindData, wire.KindEnd:
	default:
		a.close()
		return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
	}
	if err := checkHeaders(first.Header); err != nil {
		a.close()
		g.log.Warn("refusing a worker stream", "request_id", reqID, "err", err)
		return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
	}
	r := &relay{a: a, rx: a.rx, deadline: deadline, g: g, reqID: reqID, events: events, rq: rq, worker: first.Header.Get(wire.HdrWorker)}
	if first.Header.Get(wire.HdrKind) == wire.KindData && !a.accepted {
		// A worker that sent no accept names the control subject on its
		// first chunk.
		actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		control, err := g.ackSubject(actx, first)
		cancel()
		if err != nil {
			// Nothing is published to a subject the worker may not own;
			// the worker stops when its chunks meet no inbox.
			a.close()
			g.log.Warn("refusing a worker stream", "request_id", reqID, "err", err)
			return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
		}
		a.rx.SetControl(control)
	}
	if o, ok := c.Locals(localObs).(*reqObs); ok {
		o.stream, r.obs = true, o
	}
	start, _ := c.Locals(localStart).(time.Time)
	c.Set("openai-processing-ms", strconv.FormatInt(time.Since(start).Milliseconds(), 10))
	c.Set(fiber.HeaderContentType, "text/event-stream; charset=utf-8")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no")
	copyAttestation(c, first.Header)
	c.Status(http.StatusOK)
	r.conn = c.Context().Conn()
	rq.relayed = true // the relay frees the in-flight slot (shed.go) when it ends
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer rq.free()
		g.streams.add(r.conn)
		defer g.streams.remove(r.conn)
		defer r.watch()()
		r.run(w, first)
	})
	g.log.Info("stream started", "request_id", reqID, "status", 200)
	return nil
}

// flush sends what the stream buffered to the client. fasthttp copies a
// stream to the connection from its own goroutine, so a client that stops
// reading makes this block: the relay's watchdog closes the connection
// when a flush has blocked for WriteStall, or the request deadline (plus
// the time to say so) has passed. A client that stops reading cannot hold
// a connection past its deadline, nor make a shutdown wait for it.
func (r *relay) flush(w *bufio.Writer) error {
	r.flushing.Store(time.Now().UnixNano())
	if r.stall != nil {
		r.stall.Reset(r.g.cfg.WriteStall)
	}
	err := w.Flush()
	r.flushing.Store(0)
	if r.stall != nil {
		r.stall.Stop()
	}
	return err
}

// watch arms the stream's watchdog: a timer for the deadline and one that
// each flush arms for WriteStall. Timers, not a goroutine with a ticker:
// a held stream costs no goroutine and no wake-up until one fires. The
// returned func disarms both.
func (r *relay) watch() (stop func()) {
	if r.conn == nil {
		return func() {}
	}
	closeConn := func() {
		r.g.log.Info("closing the connection of a client that stopped reading", "request_id", r.reqID)
		_ = r.conn.Close()
	}
	r.stall = time.AfterFunc(time.Hour, func() {
		// A flush that ended as the timer fired leaves the stream alone.
		if since := r.flushing.Load(); since != 0 && time.Since(time.Unix(0, since)) >= r.g.cfg.WriteStall {
			closeConn()
		}
	})
	r.stall.Stop()
	dl := time.AfterFunc(time.Until(r.deadline.Add(writeSlack)), closeConn)
	return func() {
		dl.Stop()
		r.stall.Stop()
	}
}

// relay copies one stream's chunks to the client.
type relay struct {
	g        *Gateway
	a        *attempt
	rx       *wire.StreamReceiver
	deadline time.Time
	reqID    string
	events   bool    // a Responses API stream (see stream)
	obs      *reqObs // nil with metrics and tracing off
	rq       *inflight
	worker   string
	conn     net.Conn
	flushing atomic.Int64 // unix nanos when the flush in progress began; 0: none
	stall    *time.Timer  // closes the connection of a flush blocked for WriteStall (watch)
}

func (r *relay) run(w *bufio.Writer, first *nats.Msg) {
	defer r.a.close()
	defer r.g.streamEnded(r.obs)
	dl := time.NewTimer(time.Until(r.deadline))
	defer dl.Stop()
	ka := time.NewTicker(keepAlive)
	defer ka.Stop()
	probe := time.NewTicker(r.g.cfg.StreamProbe)
	defer probe.Stop()
	heard := true
	m := first
	for {
		if m != nil {
			done, ok := r.handle(w, m)
			if !ok {
				r.rx.Cancel()
				return
			}
			if done {
				return
			}
		}
		select {
		case m = <-r.a.ch:
			heard = true
		case <-probe.C:
			m = nil
			if !heard {
				// Is the worker still there? (wire.StreamReceiver.Probe)
				r.rx.Probe()
			}
			heard = false
		case <-ka.C:
			m = nil
			// A comment line alone, between events: SSE parsers and
			// the stream digest skip it (a blank line would count).
			if _, err := w.WriteString(": keep-alive\n"); err != nil || r.flush(w) != nil {
				r.rx.Cancel()
				return
			}
		case <-dl.C:
			r.fail(w, errDeadline())
			_ = r.flush(w)
			r.rx.Cancel()
			return
		case <-r.a.lost:
			// Chunks sent while the gateway was cut off are gone; those
			// queued already are relayed first.
			for len(r.a.ch) > 0 {
				done, ok := r.handle(w, <-r.a.ch)
				if !ok {
					r.rx.Cancel()
					return
				}
				if done {
					return
				}
			}
			r.g.log.Warn("stream lost with the gateway's bus connection", "request_id", r.reqID)
			r.fail(w, errBusLost())
			_ = r.flush(w)
			r.rx.Cancel()
			return
		}
	}
}

// handle writes one message; done means the stream ended, !ok that the
// client is gone or the stream broke (the worker must stop).
func (r *relay) handle(w *bufio.Writer, m *nats.Msg) (done, ok bool) {
	ch, err := r.rx.Decode(m)
	if errors.Is(err, wire.ErrWorkerGone) {
		// Once chunks flowed, only a liveness probe can bounce: the
		// worker's control subject is gone.
		e := errNoCapacity()
		if r.rx.Control() != "" {
			e = errWorkerGone()
			r.g.log.Warn("stream's worker went away", "request_id", r.reqID)
		}
		r.fail(w, e)
		_ = r.flush(w)
		return true, true
	}
	if errors.Is(err, wire.ErrChunksLost) {
		// The client may ask again; the worker is told to stop.
		r.g.log.Warn("stream lost chunks on the bus", "request_id", r.reqID, "err", err)
		r.fail(w, errWorkerGone())
		_ = r.flush(w)
		return true, false
	}
	if err != nil {
		r.g.log.Warn("refusing a stream message", "request_id", r.reqID, "err", err)
		r.fail(w, errUpstream())
		_ = r.flush(w)
		return true, false
	}
	switch ch.Kind {
	case wire.KindData:
		writeNamedEvent(w, ch.Event, ch.Data)
		if err := r.flush(w); err != nil {
			return false, false
		}
		if ch.Seq == 1 {
			r.g.firstToken(r.obs)
		}
		r.rx.Written(ch.Seq)
		return false, true
	case wire.KindEnd:
		sr, err := r.endReceipt(ch.Data)
		if err != nil {
			r.g.log.Warn("refusing a stream end without a receipt", "request_id", r.reqID, "err", err)
			r.fail(w, errNoReceipt())
			_ = r.flush(w)
			return true, true
		}
		if len(ch.Data) > 0 {
			writeNamedEvent(w, ch.Event, ch.Data)
		}
		if sr != nil {
			r.g.answered(r.rq, r.worker, sr)
		}
		if !r.events {
			_, _ = w.Write(attest.AppendSSEDone(nil))
		}
		_ = r.flush(w)
		r.g.log.Info("stream finished", "request_id", r.reqID, "chunks", ch.Seq-1)
		return true, true
	default: // wire.KindError
		writeNamedEvent(w, ch.Event, ch.Data)
		r.done(w)
		_ = r.flush(w)
		r.g.log.Info("stream failed in worker", "request_id", r.reqID, "status", ch.Status)
		return true, true
	}
}

// done ends a chat or completions stream that failed after its first
// byte: after the error event, "data: [DONE]", so the client reads a clean
// end (the error event says it is not a complete answer; its receipt never
// comes). A Responses stream ends with its "error" event.
func (r *relay) done(w *bufio.Writer) {
	if !r.events {
		_, _ = w.Write(attest.AppendSSEDone(nil))
	}
}

// fail writes an error the gateway itself produced into the stream: a
// data event {"error":…} for chat and completions, an "error" event with
// the next sequence number for a Responses stream (which SDKs raise).
func (r *relay) fail(w *bufio.Writer, e *APIError) {
	if !r.events {
		writeEvent(w, e.Body())
		r.done(w)
		return
	}
	type event struct {
		Type    string  `json:"type"`
		Seq     int     `json:"sequence_number"`
		Code    *string `json:"code"`
		Message string  `json:"message"`
		Param   *string `json:"param"`
	}
	ev := event{Type: "error", Seq: max(r.rx.Next()-1, 0), Message: e.Message}
	if e.Code != "" {
		ev.Code = &e.Code
	}
	if e.Param != "" {
		ev.Param = &e.Param
	}
	b, _ := json.Marshal(ev)
	writeNamedEvent(w, "error", b)
}

// writeNamedEvent writes one SSE event, with an "event:" field when name
// is set (Responses streams): the framing the worker's stream digest
// hashes (attest.AppendSSEEvent), so the gateway cannot frame a stream
// differently from what the receipt covers.
func writeNamedEvent(w *bufio.Writer, name string, payload []byte) {
	var buf [512]byte
	_, _ = w.Write(attest.AppendSSEEvent(buf[:0], name, payload))
}

// endReceipt checks a stream's final payload: with attestation it must be
// the receipt chunk for this request (nil data is refused); without, any
// payload passes and nothing is stored.
func (r *relay) endReceipt(data []byte) (*attest.SignedReceipt, error) {
	if r.g.cfg.Unattested {
		// No receipt is expected; one that parses is still kept.
		if sr, _, err := attest.ParseReceiptChunk(data); len(data) > 0 && err == nil {
			return sr, nil
		}
		return nil, nil
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: no receipt chunk", errBadReply)
	}
	sr, _, err := attest.ParseReceiptChunk(data)
	if err != nil {
		return nil, fmt.Errorf("%w: receipt chunk: %w", errBadReply, err)
	}
	if err := receiptNames(sr, r.reqID, true); err != nil {
		return nil, err
	}
	return sr, nil
}

// writeEvent writes one SSE event without a name.
func writeEvent(w *bufio.Writer, payload []byte) { writeNamedEvent(w, "", payload) }
