package worker

// Serving requests on one connection: the micro service endpoints, the
// concurrency bound and its queue, one request through the engine, and the
// replies.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/trace"

	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/wire"
)

// serveOn binds the buckets on sv's connection and serves the models
// there: one micro service, an inference and an attestation endpoint per
// model, in the workers' queue group.
func (w *Worker) serveOn(ctx context.Context, sv *serving) error {
	if err := w.checkDraining(); err != nil {
		return err
	}
	js, err := jetstream.New(sv.nc)
	if err != nil {
		return fmt.Errorf("connecting to jetstream: %w", err)
	}
	if sv.kv, err = wire.BindBucket(ctx, js, wire.RegistryConfig()); err != nil {
		return err
	}
	if w.cfg.Keeper != nil && sv.open {
		// Nobody admits anybody here, so nobody else stores evidence.
		if sv.ev, err = wire.BindBucket(ctx, js, wire.EvidenceConfig()); err != nil {
			return err
		}
	}
	svc, err := micro.AddService(sv.nc, micro.Config{
		Name:        wire.ServiceName,
		Version:     "0.1.0",
		Description: "teegate worker",
		Metadata:    map[string]string{"worker_id": w.cfg.ID, "wire": wire.Version},
	})
	if err != nil {
		return fmt.Errorf("adding service: %w", err)
	}
	w.mu.Lock()
	if sv.models == nil {
		sv.models = w.models
	}
	models := sv.models
	w.mu.Unlock()
	key := w.recordKey(sv)
	for i, m := range models {
		err := svc.AddEndpoint(fmt.Sprintf("model-%d", i), micro.HandlerFunc(func(r micro.Request) { w.dispatch(sv, r) }),
			micro.WithEndpointSubject(wire.InferSubject(m.ID)),
			micro.WithEndpointQueueGroup(wire.QueueGroup),
			micro.WithEndpointMetadata(map[string]string{"model": m.ID}))
		if err != nil {
			_ = svc.Stop()
			return fmt.Errorf("adding endpoint for a model: %w", err)
		}
		// The connection's own subject, where gateways that picked it by
		// its advertised capacity send. In the queue group too: while a
		// worker with static credentials replaces its service on the same
		// connection (models.go), the two share the subject and one of
		// them takes each request.
		err = svc.AddEndpoint(fmt.Sprintf("direct-%d", i), micro.HandlerFunc(func(r micro.Request) { w.dispatch(sv, r) }),
			micro.WithEndpointSubject(wire.DirectSubject(m.ID, key)),
			micro.WithEndpointQueueGroup(wire.QueueGroup),
			micro.WithEndpointMetadata(map[string]string{"model": m.ID}))
		if err != nil {
			_ = svc.Stop()
			return fmt.Errorf("adding direct endpoint for a model: %w", err)
		}
		err = svc.AddEndpoint(fmt.Sprintf("attest-%d", i), micro.HandlerFunc(func(r micro.Request) { w.dispatchAttest(sv, r) }),
			micro.WithEndpointSubject(wire.AttestSubject(m.ID)),
			micro.WithEndpointQueueGroup(wire.QueueGroup),
			micro.WithEndpointMetadata(map[string]string{"model": m.ID}))
		if err != nil {
			_ = svc.Stop()
			return fmt.Errorf("adding attestation endpoint: %w", err)
		}
	}
	if sv.ctl == nil {
		if sv.ctl, err = newControl(sv.nc); err != nil {
			_ = svc.Stop()
			return err
		}
	}
	sv.svc = svc
	if err := sv.nc.FlushTimeout(10 * time.Second); err != nil {
		_ = svc.Stop()
		return fmt.Errorf("subscribing: %w", err)
	}
	sv.active.Store(true)
	return nil
}

// dispatchAttest answers a request for fresh evidence.
func (w *Worker) dispatchAttest(sv *serving, req micro.Request) {
	notary := w.getNotary()
	if notary == nil {
		e := wire.Errorf(wire.CodeInternal, "This worker has no attestation.")
		e.Status, e.Code = http.StatusNotImplemented, "no_attestation"
		w.reply(req, wire.ErrorReply(w.cfg.ID, e))
		return
	}
	ar, err := wire.ParseAttestRequest(nats.Header(req.Headers()))
	if err != nil {
		w.reply(req, wire.ErrorReply(w.cfg.ID, wire.Errorf(wire.CodeVersion, "The worker speaks another protocol version.")))
		return
	}
	nonce := ar.Nonce
	w.begin(sv)
	go func() {
		defer w.end(sv)
		ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
		defer cancel()
		raw, err := notary.Attest(ctx, nonce)
		if err != nil {
			w.log.Error("attesting for a challenge failed", "err", err)
			e := wire.Errorf(wire.CodeInternal, "The worker could not produce evidence.")
			e.Code = "attestation_failed"
			w.reply(req, wire.ErrorReply(w.cfg.ID, e))
			return
		}
		w.reply(req, &wire.Reply{Kind: wire.KindResponse, Status: http.StatusOK, Worker: w.cfg.ID, Body: raw})
	}()
}

// begin and end count a request in flight on sv (and on the worker): a
// connection is closed only after its own requests are answered, and a
// draining worker exits only once none is left.
func (w *Worker) begin(sv *serving) {
	w.inflight.Add(1)
	sv.inflight.Add(1)
	w.countInFlight(1)
}

func (w *Worker) end(sv *serving) {
	w.lastEnd.Store(time.Now().UnixNano())
	w.countInFlight(-1)
	if w.inFlight.Load() == 0 {
		select {
		case w.idleCh <- struct{}{}:
		default:
		}
	}
	sv.inflight.Done()
	w.inflight.Done()
}

// job is one request the worker took: its context (cancelled by the
// gateway's cancel, or when the gateway's inbox is gone) and its control
// subject, where the stream sender, once there is one, takes acks.
type job struct {
	ctx     context.Context
	cancel  context.CancelFunc
	control string // "" when the request needs none (non-stream, no accept)
	remove  func()
	sender  atomic.Pointer[wire.StreamSender]
	// slot gives back the request's concurrency slot (nil until it holds
	// one); free calls it once.
	slot  func()
	freed bool
}

// free gives the job's concurrency slot back, once: just before its final
// answer is sent (so a gateway that sends its next request as soon as it
// has this answer finds the slot free instead of queueing there), else
// when the job ends. Only the job's own goroutine calls it.
func (j *job) free() {
	if j.slot != nil && !j.freed {
		j.freed = true
		j.slot()
	}
}

// newJob registers the request's control subject and, when the gateway
// asks for it, sends the accept that names it.
func (w *Worker) newJob(sv *serving, req micro.Request, h nats.Header) *job {
	j := &job{}
	j.ctx, j.cancel = context.WithCancel(w.ctx)
	accept := h.Get(wire.HdrAccept) == "1"
	if req.Reply() == "" || sv.ctl == nil || !accept && h.Get(wire.HdrStream) != "1" {
		return j
	}
	j.control, j.remove = sv.ctl.add(func(m *nats.Msg) {
		if s := j.sender.Load(); s != nil {
			s.Control(m)
			return
		}
		if wire.IsStop(m) {
			j.cancel()
		}
	})
	if accept {
		a := wire.Accept{Worker: w.cfg.ID, EvidenceID: sv.epoch, Control: j.control}
		if err := sv.nc.PublishMsg(a.Msg(req.Reply())); err != nil {
			w.log.Warn("accepting a request failed", "err", err)
		}
	}
	return j
}

func (j *job) done() {
	if j.remove != nil {
		j.remove()
	}
	j.cancel()
}

// dispatch runs in the subscription's goroutine: it must not block.
func (w *Worker) dispatch(sv *serving, req micro.Request) {
	w.served.Add(1)
	h := nats.Header(req.Headers())
	busy := func() {
		w.metrics.turnedAway()
		w.reply(req, wire.ErrorReply(w.cfg.ID, wire.Errorf(wire.CodeBusy, "The worker is at capacity. Retry shortly.")))
	}
	run := func(j *job) {
		j.slot = func() { <-w.sem }
		defer func() {
			j.free()
			j.done()
			w.end(sv)
		}()
		w.serve(sv, req, h, j)
	}
	select {
	case w.sem <- struct{}{}:
		w.begin(sv)
		go run(w.newJob(sv, req, h))
		return
	default:
	}
	// Full: wait briefly for a slot, in a bounded queue.
	if w.waiting.Add(1) > int64(w.cfg.MaxQueue) {
		w.waiting.Add(-1)
		busy()
		return
	}
	w.begin(sv)
	j := w.newJob(sv, req, h)
	go func() {
		t := time.NewTimer(w.cfg.QueueWait)
		defer t.Stop()
		select {
		case w.sem <- struct{}{}:
			w.waiting.Add(-1)
			run(j)
		case <-t.C:
			w.waiting.Add(-1)
			busy()
			j.done()
			w.end(sv)
		case <-j.ctx.Done():
			w.waiting.Add(-1)
			busy()
			j.done()
			w.end(sv)
		}
	}()
}

func (w *Worker) serve(sv *serving, req micro.Request, h nats.Header, j *job) {
	start := time.Now()
	if w.metrics == nil && w.tracer == nil {
		w.serveRequest(sv, req, h, j, start, nil)
		return
	}
	model := w.modelLabel(h.Get(wire.HdrModel))
	var span trace.Span
	if w.tracer != nil {
		span = w.startSpan(h, model)
	}
	status := w.serveRequest(sv, req, h, j, start, span)
	w.metrics.served(model, status, start)
	if span != nil {
		endSpan(span, status)
	}
}

// serveRequest serves one request and returns the HTTP status it was
// answered with (a stream's: the status it ended with).
func (w *Worker) serveRequest(sv *serving, req micro.Request, h nats.Header, j *job, start time.Time, span trace.Span) int {
	r, err := wire.ParseRequest(h, req.Data())
	if errors.Is(err, wire.ErrVersion) {
		e := wire.Errorf(wire.CodeVersion, "The worker speaks another protocol version.")
		w.reply(req, wire.ErrorReply(w.cfg.ID, e))
		return e.Status
	}
	if err != nil {
		e := wire.Errorf(wire.CodeBad, "Unknown operation.")
		w.reply(req, wire.ErrorReply(w.cfg.ID, e))
		return e.Status
	}
	if r.ID == "" {
		// Receipts name the request; a caller that sent no usable id
		// (not the gateway) gets one made here.
		r.ID = newRequestID()
	}
	log := w.log.With("request_id", r.ID)
	op := engine.Op(r.Op)
	ctx, cancel := j.ctx, j.cancel
	if span != nil {
		ctx = trace.ContextWithSpan(ctx, span)
	}
	if !r.Deadline.IsZero() {
		var c2 context.CancelFunc
		ctx, c2 = context.WithDeadline(ctx, r.Deadline)
		defer c2()
	}
	meta := Meta{RequestID: r.ID, Model: r.Model, Op: r.Op, Nonce: r.Nonce, Inline: r.Inline}
	call := engine.Call{Op: op, Body: r.Body, Stream: r.Stream, RequestID: r.ID}
	// A stream whose client did not ask for usage still gets a receipt with
	// the real usage: the engine is asked for it, the chunk kept back.
	meta.UsageHidden = call.Stream && (op == engine.OpChatCompletions || op == engine.OpCompletions) && !asksUsage(call.Body)
	call.IncludeUsage = meta.UsageHidden
	if call.Stream && (req.Reply() == "" || j.control == "") {
		e := wire.Errorf(wire.CodeBad, "A stream needs a reply inbox.")
		w.reply(req, wire.ErrorReply(w.cfg.ID, e))
		return e.Status
	}
	ectx, espan := w.engineSpan(ctx, op)
	res, err := w.cfg.Engine.Do(ectx, call)
	if err != nil {
		endEngineSpan(espan, err)
		status := w.replyEngineError(req, ctx, err)
		log.Info("request failed", "op", op, "status", status, "ms", time.Since(start).Milliseconds())
		return status
	}
	if call.Stream {
		n, err := w.stream(ctx, cancel, sv, req, j, r, meta, res.Stream)
		endEngineSpan(espan, err)
		if err != nil {
			log.Info("stream ended early", "op", op, "chunks", n, "err", err)
			return statusOf(err)
		}
		log.Info("stream served", "op", op, "chunks", n, "ms", time.Since(start).Milliseconds())
		return http.StatusOK
	}
	endEngineSpan(espan, nil)
	rep := &wire.Reply{Kind: wire.KindResponse, Status: http.StatusOK, Worker: w.cfg.ID, Body: res.Body}
	if notary := w.getNotary(); notary != nil {
		signStart := time.Now()
		sh, err := notary.Seal(ctx, meta, call.Body, res.Body)
		w.metrics.signed("response", signStart)
		if err != nil {
			log.Error("sealing receipt failed", "err", err)
			e := sealFailure(err)
			w.reply(req, wire.ErrorReply(w.cfg.ID, e))
			return e.Status
		}
		rep.Attestation = sh
	}
	j.free()
	if err := w.respond(req, rep); err != nil {
		log.Warn("replying failed", "err", err)
		return http.StatusOK
	}
	log.Info("request served", "op", op, "status", 200, "ms", time.Since(start).Milliseconds())
	return http.StatusOK
}

// replyEngineError maps an engine failure to a reply and returns the status.
func (w *Worker) replyEngineError(req micro.Request, ctx context.Context, err error) int {
	if e, ok := engine.AsError(err); ok {
		w.reply(req, &wire.Reply{Kind: wire.KindError, Status: e.Status, Code: wire.CodeEngine, Worker: w.cfg.ID, Body: e.Body()})
		return e.Status
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		e := wire.Errorf(wire.CodeDeadline, "The request did not finish before its deadline.")
		w.reply(req, wire.ErrorReply(w.cfg.ID, e))
		return e.Status
	}
	w.log.Error("engine failed", "err", err)
	e := wire.Errorf(wire.CodeInternal, "The engine failed to process the request.")
	w.reply(req, wire.ErrorReply(w.cfg.ID, e))
	return e.Status
}

// sealFailure is the answer when no receipt could be issued: 503
// evidence_rate_limited when fresh-mode evidence for this worker key was
// refused for its rate (the gateway adds Retry-After to a 503), else 500
// receipt_failed. Either way no unreceipted answer leaves the worker.
func sealFailure(err error) *wire.Error {
	e := wire.Errorf(wire.CodeInternal, "The worker could not issue a receipt.")
	e.Code = "receipt_failed"
	if errors.Is(err, ErrEvidenceRateLimited) {
		e.Status, e.Code, e.RetryAfter = http.StatusServiceUnavailable, "evidence_rate_limited", 1
		e.Message = "Fresh-mode evidence is being requested faster than this worker may produce it. Retry after the time in the Retry-After header."
	}
	return e
}

// reply answers req with r, if it has a reply subject; a failure is logged.
func (w *Worker) reply(req micro.Request, r *wire.Reply) {
	if req.Reply() == "" {
		return
	}
	if err := w.respond(req, r); err != nil {
		w.log.Warn("replying failed", "kind", r.Kind, "err", err)
	}
}

func (w *Worker) respond(req micro.Request, r *wire.Reply) error {
	return req.Respond(r.Body, micro.WithHeaders(micro.Headers(r.Header())))
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "req_" + hex.EncodeToString(b[:])
}
