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
	"strconv"
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
		w.replyError(req, http.StatusNotImplemented, wire.CodeInternal,
			engine.Errorf(http.StatusNotImplemented, "server_error", "", "no_attestation", "This worker has no attestation."))
		return
	}
	nonce := nats.Header(req.Headers()).Get(wire.HdrNonce)
	w.begin(sv)
	go func() {
		defer w.end(sv)
		ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
		defer cancel()
		raw, err := notary.Attest(ctx, nonce)
		if err != nil {
			w.log.Error("attesting for a challenge failed", "err", err)
			w.replyError(req, http.StatusInternalServerError, wire.CodeInternal,
				engine.Errorf(http.StatusInternalServerError, "server_error", "", "attestation_failed", "The worker could not produce evidence."))
			return
		}
		hdr := nats.Header{}
		hdr.Set(wire.HdrKind, wire.KindResponse)
		hdr.Set(wire.HdrStatus, "200")
		hdr.Set(wire.HdrContentType, "application/json")
		hdr.Set(wire.HdrWorker, w.cfg.ID)
		if err := req.Respond(raw, micro.WithHeaders(micro.Headers(hdr))); err != nil {
			w.log.Warn("replying with evidence failed", "err", err)
		}
	}()
}

// begin and end count a request in flight on sv (and on the worker): a
// connection is closed only after its own requests are answered.
func (w *Worker) begin(sv *serving) {
	w.inflight.Add(1)
	sv.inflight.Add(1)
	w.countInFlight(1)
}

func (w *Worker) end(sv *serving) {
	w.countInFlight(-1)
	sv.inflight.Done()
	w.inflight.Done()
}

// dispatch runs in the subscription's goroutine: it must not block.
func (w *Worker) dispatch(sv *serving, req micro.Request) {
	w.served.Add(1)
	busy := func() {
		w.metrics.turnedAway()
		w.replyError(req, http.StatusServiceUnavailable, wire.CodeBusy,
			engine.Errorf(http.StatusServiceUnavailable, "server_error", "", "worker_busy", "The worker is at capacity. Retry shortly."))
	}
	run := func() {
		defer func() {
			<-w.sem
			w.end(sv)
		}()
		w.serve(sv, req)
	}
	select {
	case w.sem <- struct{}{}:
		w.begin(sv)
		go run()
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
	go func() {
		t := time.NewTimer(w.cfg.QueueWait)
		defer t.Stop()
		select {
		case w.sem <- struct{}{}:
			w.waiting.Add(-1)
			run()
		case <-t.C:
			w.waiting.Add(-1)
			busy()
			w.end(sv)
		case <-w.ctx.Done():
			w.waiting.Add(-1)
			busy()
			w.end(sv)
		}
	}()
}

func (w *Worker) serve(sv *serving, req micro.Request) {
	start := time.Now()
	h := nats.Header(req.Headers())
	if w.metrics == nil && w.tracer == nil {
		w.serveRequest(sv, req, h, start, nil)
		return
	}
	model := w.modelLabel(h.Get(wire.HdrModel))
	var span trace.Span
	if w.tracer != nil {
		span = w.startSpan(h, model)
	}
	status := w.serveRequest(sv, req, h, start, span)
	w.metrics.served(model, status, start)
	if span != nil {
		endSpan(span, status)
	}
}

// serveRequest serves one request and returns the HTTP status it was
// answered with (a stream's: the status it ended with).
func (w *Worker) serveRequest(sv *serving, req micro.Request, h nats.Header, start time.Time, span trace.Span) int {
	reqID := h.Get(wire.HdrRequestID)
	if reqID == "" || len(reqID) > 128 || wire.Token(reqID) != reqID {
		// Receipts name the request; a caller that sent no usable id
		// (not the gateway) gets one made here.
		reqID = newRequestID()
	}
	log := w.log.With("request_id", reqID)
	if v := h.Get(wire.HdrVersion); v != wire.Version {
		w.replyError(req, http.StatusServiceUnavailable, wire.CodeVersion,
			engine.Errorf(http.StatusServiceUnavailable, "server_error", "", "protocol_version", "The worker speaks another protocol version."))
		return http.StatusServiceUnavailable
	}
	op := engine.Op(h.Get(wire.HdrOp))
	if !op.Valid() {
		w.replyError(req, http.StatusBadRequest, wire.CodeBad, engine.InvalidRequest("", "Unknown operation."))
		return http.StatusBadRequest
	}
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	if span != nil {
		ctx = trace.ContextWithSpan(ctx, span)
	}
	if dl, ok := wire.Deadline(h); ok {
		var c2 context.CancelFunc
		ctx, c2 = context.WithDeadline(ctx, dl)
		defer c2()
	}
	meta := Meta{RequestID: reqID, Model: h.Get(wire.HdrModel), Op: string(op), Nonce: h.Get(wire.HdrNonce), Inline: h.Get(wire.HdrInline) != ""}
	call := engine.Call{Op: op, Body: req.Data(), Stream: h.Get(wire.HdrStream) == "1", RequestID: reqID}
	// A stream whose client did not ask for usage still gets a receipt with
	// the real usage: the engine is asked for it, the chunk kept back.
	meta.UsageHidden = call.Stream && (op == engine.OpChatCompletions || op == engine.OpCompletions) && !asksUsage(call.Body)
	call.IncludeUsage = meta.UsageHidden
	if call.Stream && req.Reply() == "" {
		w.replyError(req, http.StatusBadRequest, wire.CodeBad, engine.InvalidRequest("", "A stream needs a reply inbox."))
		return http.StatusBadRequest
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
		n, err := w.stream(ctx, cancel, sv, req, h, meta, res.Stream)
		endEngineSpan(espan, err)
		if err != nil {
			log.Info("stream ended early", "op", op, "chunks", n, "err", err)
			return statusOf(err)
		}
		log.Info("stream served", "op", op, "chunks", n, "ms", time.Since(start).Milliseconds())
		return http.StatusOK
	}
	endEngineSpan(espan, nil)
	hdr := nats.Header{}
	if notary := w.getNotary(); notary != nil {
		signStart := time.Now()
		sh, err := notary.Seal(ctx, meta, call.Body, res.Body)
		w.metrics.signed("response", signStart)
		if err != nil {
			log.Error("sealing receipt failed", "err", err)
			w.replyError(req, http.StatusInternalServerError, wire.CodeInternal,
				engine.Errorf(http.StatusInternalServerError, "server_error", "", "receipt_failed", "The worker could not issue a receipt."))
			return http.StatusInternalServerError
		}
		for k, v := range sh {
			hdr[k] = v
		}
	}
	hdr.Set(wire.HdrKind, wire.KindResponse)
	hdr.Set(wire.HdrStatus, "200")
	hdr.Set(wire.HdrContentType, "application/json")
	hdr.Set(wire.HdrWorker, w.cfg.ID)
	if err := req.Respond(res.Body, micro.WithHeaders(micro.Headers(hdr))); err != nil {
		log.Warn("replying failed", "err", err)
		return http.StatusOK
	}
	log.Info("request served", "op", op, "status", 200, "ms", time.Since(start).Milliseconds())
	return http.StatusOK
}

// replyEngineError maps an engine failure to a reply and returns the status.
func (w *Worker) replyEngineError(req micro.Request, ctx context.Context, err error) int {
	if e, ok := engine.AsError(err); ok {
		w.replyError(req, e.Status, wire.CodeEngine, e)
		return e.Status
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		w.replyError(req, http.StatusGatewayTimeout, wire.CodeDeadline,
			engine.Errorf(http.StatusGatewayTimeout, "timeout", "", "deadline_exceeded", "The request did not finish before its deadline."))
		return http.StatusGatewayTimeout
	}
	w.log.Error("engine failed", "err", err)
	w.replyError(req, http.StatusInternalServerError, wire.CodeInternal,
		engine.Errorf(http.StatusInternalServerError, "server_error", "", "", "The engine failed to process the request."))
	return http.StatusInternalServerError
}

func (w *Worker) replyError(req micro.Request, status int, code string, e *engine.Error) {
	hdr := nats.Header{}
	hdr.Set(wire.HdrKind, wire.KindError)
	hdr.Set(wire.HdrStatus, strconv.Itoa(status))
	hdr.Set(wire.HdrError, code)
	hdr.Set(wire.HdrContentType, "application/json")
	hdr.Set(wire.HdrWorker, w.cfg.ID)
	if req.Reply() == "" {
		return
	}
	if err := req.Respond(e.Body(), micro.WithHeaders(micro.Headers(hdr))); err != nil {
		w.log.Warn("replying with error failed", "err", err)
	}
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "req_" + hex.EncodeToString(b[:])
}
