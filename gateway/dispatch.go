package gateway

import (
	"bufio"
	"bytes"
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
		if e := g.route(p.Model); e != nil {
			return g.finish(c, reqID, send(c, e), e.Status)
		}
		g.routed(obs, p.Model)
		if e := g.admit(c, rq); e != nil {
			return g.finish(c, reqID, send(c, e), e.Status)
		}
		start, _ := c.Locals(localStart).(time.Time)
		deadline := start.Add(g.cfg.RequestTimeout)

		msg := nats.NewMsg(wire.InferSubject(p.Model))
		// fasthttp reuses the body buffer after the handler returns, and a
		// stream outlives the handler: forward a copy.
		msg.Data = bytes.Clone(c.Body())
		h := msg.Header
		h.Set(wire.HdrVersion, wire.Version)
		h.Set(wire.HdrRequestID, reqID)
		h.Set(wire.HdrOp, op)
		h.Set(wire.HdrModel, p.Model)
		h.Set(wire.HdrTenant, key.Tenant)
		wire.SetDeadline(h, deadline)
		if n := c.Get(HeaderNonce); n != "" {
			if len(n) > 256 {
				return send(c, errInvalid("Teegate-Nonce", "The Teegate-Nonce header is longer than 256 bytes."))
			}
			if !validNonce(n) {
				// Receipts carry the nonce as UTF-8 text: other bytes would be
				// recorded lossily, and distinct nonces would collide.
				return send(c, errInvalid("Teegate-Nonce", "The Teegate-Nonce header must be UTF-8 text without control characters."))
			}
			h.Set(wire.HdrNonce, n)
		}
		if c.Get(HeaderInline) != "" {
			h.Set(wire.HdrInline, "1")
		}
		if obs != nil && obs.span != nil {
			injectTrace(obs.span, h)
		} else if tp := c.Get("traceparent"); tp != "" {
			h.Set(wire.HdrTrace, tp)
		}
		var err error
		if p.Stream {
			h.Set(wire.HdrStream, "1")
			h.Set(wire.HdrWindow, strconv.Itoa(g.cfg.StreamWindow))
			err = g.stream(c, msg, deadline, rq, op == wire.OpResponses)
		} else {
			err = g.unary(c, msg, deadline, rq)
		}
		return err
	}
}

// unary forwards a non-stream request and relays the reply bytes.
func (g *Gateway) unary(c *fiber.Ctx, msg *nats.Msg, deadline time.Time, rq *inflight) error {
	reqID := rq.id
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	tried := map[string]bool{}
	for attempt := 1; ; attempt++ {
		l, ok := g.awaitLease(ctx, rq.model, tried)
		if !ok {
			return g.finish(c, reqID, send(c, errNoCapacity()), http.StatusServiceUnavailable)
		}
		msg.Subject = l.Subject
		reply, err := g.request(ctx, msg)
		l.Release()
		switch {
		case errors.Is(err, nats.ErrNoResponders) && l.Key != "" && attempt < g.cfg.Attempts:
			// The record outlived its connection: try another.
			tried[l.Key] = true
			continue
		case errors.Is(err, nats.ErrNoResponders):
			return g.finish(c, reqID, send(c, errNoCapacity()), http.StatusServiceUnavailable)
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
			return g.finish(c, reqID, send(c, errDeadline()), http.StatusGatewayTimeout)
		case err != nil:
			g.log.Error("forwarding request failed", "request_id", reqID, "err", err)
			return g.finish(c, reqID, send(c, errNoCapacity()), http.StatusServiceUnavailable)
		}
		if reply.Header.Get(wire.HdrError) == wire.CodeBusy {
			if attempt < g.cfg.Attempts {
				tried[l.Key] = l.Key != ""
				continue
			}
			return g.finish(c, reqID, send(c, errNoCapacity()), http.StatusServiceUnavailable)
		}
		status, err := strconv.Atoi(reply.Header.Get(wire.HdrStatus))
		if err != nil || status < 200 || status > 599 {
			return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
		}
		ct, err := replyContentType(reply.Header)
		if err == nil {
			err = checkHeaders(reply.Header)
		}
		if err != nil {
			g.log.Warn("refusing a worker reply", "request_id", reqID, "err", err)
			return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
		}
		success := status < 300 && reply.Header.Get(wire.HdrKind) == wire.KindResponse
		if status < 300 && !success {
			return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
		}
		var sr *attest.SignedReceipt
		if success && !g.cfg.Unattested {
			if sr, err = checkReceipt(reply.Header, reqID); err != nil {
				g.log.Warn("refusing a success without a receipt", "request_id", reqID, "err", err)
				return g.finish(c, reqID, send(c, errNoReceipt()), http.StatusBadGateway)
			}
		}
		copyAttestation(c, reply.Header)
		if sr != nil {
			g.storeReceipt(reqID, sr)
			g.answered(rq, reply.Header.Get(wire.HdrWorker), sr)
		} else {
			g.storeHeaderReceipt(reqID, reply.Header)
		}
		if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
			c.Set(fiber.HeaderRetryAfter, "1")
		}
		c.Set(fiber.HeaderContentType, ct)
		return g.finish(c, reqID, c.Status(status).Send(reply.Data), status)
	}
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

// stream forwards a stream request: it waits for the first message to pick
// between an error reply and an SSE response, then relays the chunks from a
// stream writer that flushes each one.
//
// events marks a Responses API stream: its chunks are named SSE events
// (wire.HdrEvent), its errors are "error" events, and it ends without
// "data: [DONE]", as OpenAI's does.
func (g *Gateway) stream(c *fiber.Ctx, msg *nats.Msg, deadline time.Time, rq *inflight, events bool) error {
	reqID := rq.id
	nc := g.cfg.Conn
	window := g.cfg.StreamWindow
	pctx, pcancel := context.WithDeadline(context.Background(), deadline)
	defer pcancel()
	tried := map[string]bool{}
	var l *lease
	// The lease is the relay's once the stream starts; every other way out
	// gives it back.
	defer func() { l.Release() }()
	for attempt := 1; ; attempt++ {
		l.Release()
		var ok bool
		if l, ok = g.awaitLease(pctx, rq.model, tried); !ok {
			return g.finish(c, reqID, send(c, errNoCapacity()), http.StatusServiceUnavailable)
		}
		msg.Subject = l.Subject
		inbox := g.newInbox()
		// Capacity beyond the window: the worker never has more than window
		// data chunks unacknowledged, plus one end or error message.
		ch := make(chan *nats.Msg, window+8)
		sub, err := nc.ChanSubscribe(inbox, ch)
		if err != nil {
			g.log.Error("subscribing for a stream failed", "request_id", reqID, "err", err)
			return g.finish(c, reqID, send(c, errInternal()), http.StatusInternalServerError)
		}
		msg.Reply = inbox
		if err := nc.PublishMsg(msg); err != nil {
			_ = sub.Unsubscribe()
			g.log.Error("publishing a stream request failed", "request_id", reqID, "err", err)
			return g.finish(c, reqID, send(c, errNoCapacity()), http.StatusServiceUnavailable)
		}
		timer := time.NewTimer(time.Until(deadline))
		var first *nats.Msg
		select {
		case first = <-ch:
			timer.Stop()
		case <-timer.C:
			_ = sub.Unsubscribe()
			return g.finish(c, reqID, send(c, errDeadline()), http.StatusGatewayTimeout)
		}
		if wire.IsNoResponders(first) {
			_ = sub.Unsubscribe()
			if l.Key != "" && attempt < g.cfg.Attempts {
				tried[l.Key] = true // the record outlived its connection
				continue
			}
			return g.finish(c, reqID, send(c, errNoCapacity()), http.StatusServiceUnavailable)
		}
		switch first.Header.Get(wire.HdrKind) {
		case wire.KindError:
			_ = sub.Unsubscribe()
			if first.Header.Get(wire.HdrError) == wire.CodeBusy && attempt < g.cfg.Attempts {
				tried[l.Key] = l.Key != ""
				continue
			}
			status, err := strconv.Atoi(first.Header.Get(wire.HdrStatus))
			if err != nil || status < 400 || status > 599 {
				return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
			}
			if status == http.StatusServiceUnavailable {
				c.Set(fiber.HeaderRetryAfter, "1")
			}
			if _, err := replyContentType(first.Header); err != nil {
				return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
			}
			c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
			return g.finish(c, reqID, c.Status(status).Send(first.Data), status)
		case wire.KindData, wire.KindEnd:
		default:
			_ = sub.Unsubscribe()
			return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
		}
		if err := checkHeaders(first.Header); err != nil {
			_ = sub.Unsubscribe()
			g.log.Warn("refusing a worker stream", "request_id", reqID, "err", err)
			return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
		}
		r := &relay{nc: nc, sub: sub, ch: ch, window: window, deadline: deadline, g: g, reqID: reqID, events: events, rq: rq, worker: first.Header.Get(wire.HdrWorker)}
		if first.Header.Get(wire.HdrKind) == wire.KindData {
			actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r.control, err = g.ackSubject(actx, first)
			cancel()
			if err != nil {
				// Nothing is published to a subject the worker may not own;
				// the worker stops when its chunks meet no inbox.
				_ = sub.Unsubscribe()
				g.log.Warn("refusing a worker stream", "request_id", reqID, "err", err)
				return g.finish(c, reqID, send(c, errUpstream()), http.StatusBadGateway)
			}
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
		held := l
		l = nil
		c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
			defer held.Release()
			g.streams.add(r.conn)
			defer g.streams.remove(r.conn)
			stop := make(chan struct{})
			defer close(stop)
			go r.watch(stop)
			r.run(w, first)
		})
		g.log.Info("stream started", "request_id", reqID, "status", 200)
		return nil
	}
}

// flush sends what the stream buffered to the client. fasthttp copies a
// stream to the connection from its own goroutine, so a client that stops
// reading makes this block: the relay's watchdog closes the connection
// when a flush has blocked for WriteStall, or the request deadline (plus
// the time to say so) has passed. A client that stops reading cannot hold
// a connection past its deadline, nor make a shutdown wait for it.
func (r *relay) flush(w *bufio.Writer) error {
	r.flushing.Store(time.Now().UnixNano())
	err := w.Flush()
	r.flushing.Store(0)
	return err
}

// watch closes the client connection of a stalled stream; it returns when
// stop closes.
func (r *relay) watch(stop <-chan struct{}) {
	if r.conn == nil {
		return
	}
	t := time.NewTicker(max(r.g.cfg.WriteStall/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			since := r.flushing.Load()
			if since != 0 && now.Sub(time.Unix(0, since)) > r.g.cfg.WriteStall || now.After(r.deadline.Add(writeSlack)) {
				r.g.log.Info("closing the connection of a client that stopped reading", "request_id", r.reqID)
				_ = r.conn.Close()
				return
			}
		}
	}
}

// relay copies one stream's chunks to the client.
type relay struct {
	g        *Gateway
	nc       *nats.Conn
	sub      *nats.Subscription
	ch       chan *nats.Msg
	window   int
	deadline time.Time
	reqID    string
	events   bool    // a Responses API stream (see stream)
	obs      *reqObs // nil with metrics and tracing off
	rq       *inflight
	worker   string
	conn     net.Conn
	flushing atomic.Int64 // unix nanos when the flush in progress began; 0: none

	next    int    // next expected seq
	acked   int    // last seq acknowledged to the worker
	control string // the worker's ack subject, checked on the first chunk
}

func (r *relay) run(w *bufio.Writer, first *nats.Msg) {
	defer func() { _ = r.sub.Unsubscribe() }()
	defer r.g.streamEnded(r.obs)
	r.next = 1
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
				r.cancel()
				return
			}
			if done {
				return
			}
		}
		select {
		case m = <-r.ch:
			heard = true
		case <-probe.C:
			m = nil
			if !heard {
				r.probe()
			}
			heard = false
		case <-ka.C:
			m = nil
			// A comment line alone, between events: SSE parsers and
			// the stream digest skip it (a blank line would count).
			if _, err := w.WriteString(": keep-alive\n"); err != nil || r.flush(w) != nil {
				r.cancel()
				return
			}
		case <-dl.C:
			r.fail(w, errDeadline())
			_ = r.flush(w)
			r.cancel()
			return
		}
	}
}

// handle writes one message; done means the stream ended, !ok that the
// client is gone or the stream broke (the worker must stop).
func (r *relay) handle(w *bufio.Writer, m *nats.Msg) (done, ok bool) {
	if wire.IsNoResponders(m) {
		// Once chunks flowed, only a liveness probe can bounce: the
		// worker's ack subject is gone (see probe).
		e := errNoCapacity()
		if r.control != "" {
			e = errWorkerGone()
			r.g.log.Warn("stream's worker went away", "request_id", r.reqID)
		}
		r.fail(w, e)
		_ = r.flush(w)
		return true, true
	}
	seq, err := strconv.Atoi(m.Header.Get(wire.HdrSeq))
	if err != nil || seq != r.next {
		r.g.log.Warn("stream out of order", "request_id", r.reqID, "want", r.next, "got", seq)
		r.fail(w, errUpstream())
		_ = r.flush(w)
		return true, false
	}
	event := ""
	if r.events {
		// A Responses stream names every event; a name that could break
		// the SSE framing is the worker's fault, not the client's.
		if event = m.Header.Get(wire.HdrEvent); !wire.ValidEventName(event) && (event != "" || m.Header.Get(wire.HdrKind) == wire.KindData) {
			r.g.log.Warn("stream event without a valid name", "request_id", r.reqID)
			r.fail(w, errUpstream())
			_ = r.flush(w)
			return true, false
		}
	}
	r.next++
	switch m.Header.Get(wire.HdrKind) {
	case wire.KindData:
		if m.Reply != r.control {
			// Acks go only where the first chunk asked, which was checked.
			r.g.log.Warn("stream chunk changed its ack subject", "request_id", r.reqID)
			r.fail(w, errUpstream())
			_ = r.flush(w)
			return true, false
		}
		writeNamedEvent(w, event, m.Data)
		if err := r.flush(w); err != nil {
			return false, false
		}
		if seq == 1 {
			r.g.firstToken(r.obs)
		}
		if seq-r.acked >= max(1, r.window/2) && r.control != "" {
			ack := nats.NewMsg(r.control)
			ack.Header.Set(wire.HdrAck, strconv.Itoa(seq))
			_ = r.nc.PublishMsg(ack)
			r.acked = seq
		}
		return false, true
	case wire.KindEnd:
		sr, err := r.endReceipt(m.Data)
		if err != nil {
			r.g.log.Warn("refusing a stream end without a receipt", "request_id", r.reqID, "err", err)
			r.fail(w, errNoReceipt())
			_ = r.flush(w)
			return true, true
		}
		if len(m.Data) > 0 {
			writeNamedEvent(w, event, m.Data)
		}
		if sr != nil {
			r.g.storeReceipt(r.reqID, sr)
			r.g.answered(r.rq, r.worker, sr)
		}
		if !r.events {
			_, _ = w.Write(attest.AppendSSEDone(nil))
		}
		_ = r.flush(w)
		r.g.log.Info("stream finished", "request_id", r.reqID, "chunks", seq-1)
		return true, true
	case wire.KindError:
		writeNamedEvent(w, event, m.Data)
		_ = r.flush(w)
		r.g.log.Info("stream failed in worker", "request_id", r.reqID, "status", m.Header.Get(wire.HdrStatus))
		return true, true
	}
	r.fail(w, errUpstream())
	_ = r.flush(w)
	return true, false
}

// fail writes an error the gateway itself produced into the stream: a
// data event {"error":…} for chat and completions, an "error" event with
// the next sequence number for a Responses stream (which SDKs raise).
func (r *relay) fail(w *bufio.Writer, e *APIError) {
	if !r.events {
		writeEvent(w, e.Body())
		return
	}
	type event struct {
		Type    string  `json:"type"`
		Seq     int     `json:"sequence_number"`
		Code    *string `json:"code"`
		Message string  `json:"message"`
		Param   *string `json:"param"`
	}
	ev := event{Type: "error", Seq: max(r.next-1, 0), Message: e.Message}
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

// cancel tells the worker to stop generating.
func (r *relay) cancel() {
	if r.control == "" {
		return // unsubscribing the inbox stops the worker at its next chunk
	}
	m := nats.NewMsg(r.control)
	m.Header.Set(wire.HdrCancel, "1")
	_ = r.nc.PublishMsg(m)
}

// writeEvent writes one SSE event without a name.
func writeEvent(w *bufio.Writer, payload []byte) { writeNamedEvent(w, "", payload) }
