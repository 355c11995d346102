package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/responses"
	"github.com/teegate/teegate/worker/wire"
)

// Config configures a Worker. Engine is required, and either Conn, or Dial
// and Keeper.
type Config struct {
	// Conn is a connection with static credentials that the worker serves
	// on as it is: a NATS server without admission, or tests. The caller
	// owns it.
	Conn *nats.Conn
	// Dial opens a new NATS connection with the options given appended to
	// the caller's own (URL, name, TLS). With Keeper it makes the worker
	// connect by its evidence (DESIGN §4, connect.go): a connection per key
	// epoch, authenticated by the epoch's signing key, admitted or
	// quarantined by the gateway's policy. The worker owns these
	// connections.
	Dial func(opts ...nats.Option) (*nats.Conn, error)
	// Keeper holds the worker's key epochs (required with Dial); its
	// identity names this worker and the models its connections may serve.
	// Without Notary the worker issues receipts with a KeeperNotary over it.
	Keeper *enclave.Keeper
	// RetryInterval is how long a worker that was not admitted waits
	// before it asks again (default 30 s): the gateway's policy may change.
	RetryInterval time.Duration
	Engine        engine.Engine
	// ID names the worker; default the Keeper's worker id, else a random id.
	ID string
	// MaxConcurrency bounds requests served at once. Default 64.
	MaxConcurrency int
	// MaxQueue bounds requests waiting for a slot (default 4×MaxConcurrency)
	// and QueueWait how long each may wait (default 5s); past either the
	// worker answers "busy" so the gateway tries another.
	MaxQueue  int
	QueueWait time.Duration
	// Heartbeat is how often the registry record is refreshed (and, with a
	// Keeper, how often the worker looks for a new key epoch). Default 5s.
	Heartbeat time.Duration
	// AckTimeout bounds the wait for flow-control credit in a stream; a
	// client that reads nothing for this long loses its stream. Default 30s.
	AckTimeout time.Duration
	// Notary, when set, issues receipts for responses.
	Notary Notary
	// TEE is the evidence kind announced in the registry (informational).
	TEE    string
	Logger *slog.Logger
	// Metrics, when set, receives the worker's Prometheus metrics (served
	// by the caller: teegate worker --metrics-listen, or the gateway's
	// /metrics in teegate dev). Nil: no metrics.
	Metrics prometheus.Registerer
	// Tracer, when set, traces each request as a child of the trace
	// context the gateway put in the NATS headers; the engine's context
	// carries the span (the openai engine sends it upstream). Nil: none.
	Tracer trace.TracerProvider
}

// Notary issues receipts. The worker calls it with exact bytes; it never
// sees anything else of a request.
type Notary interface {
	// EvidenceID is the current evidence bundle id.
	EvidenceID() string
	// Attest returns canonical evidence bundle bytes produced now and
	// bound to the client's challenge nonce.
	Attest(ctx context.Context, nonce string) ([]byte, error)
	// Seal returns headers to attach to a non-stream reply.
	Seal(ctx context.Context, meta Meta, request, response []byte) (nats.Header, error)
	// Stream starts a receipt for a stream; Add is called with every
	// event in order (its SSE event type, "" for none, and its data) and
	// Finish returns the final payload (the receipt chunk) to send before
	// the end of the stream, or nil.
	Stream(ctx context.Context, meta Meta, request []byte) StreamNotary
}

// StreamNotary accumulates a stream's payloads for its receipt.
type StreamNotary interface {
	// Add takes each payload in order with its SSE event name ("" for
	// chat and completions chunks, which have none).
	Add(event string, payload []byte)
	// Finish returns the receipt event's payload. Responses API streams
	// send it as event attest.ResponsesReceiptEvent.
	Finish(ctx context.Context) ([]byte, error)
	// Usage takes the usage chunk the worker asked the engine for and
	// keeps from the client (engine.Call.IncludeUsage): its usage is what
	// the receipt signs; it is not part of the stream's digest.
	Usage(payload []byte)
}

// Meta is the request metadata a receipt covers besides the bytes.
type Meta struct {
	RequestID string
	Model     string
	Op        string
	Nonce     string
	Inline    bool
	// UsageHidden: the client's stream did not ask for usage, so the
	// worker asked the engine for it and keeps the usage chunk back
	// (StreamNotary.Usage).
	UsageHidden bool
}

func (c *Config) validate() error {
	if c.Engine == nil {
		return errors.New("worker config: Engine is required")
	}
	switch {
	case c.Conn != nil && (c.Dial != nil || c.Keeper != nil):
		return errors.New("worker config: set Conn, or Dial and Keeper, not both")
	case c.Conn == nil && (c.Dial == nil || c.Keeper == nil):
		return errors.New("worker config: Conn, or Dial and Keeper, are required")
	}
	if c.Keeper != nil {
		ep := c.Keeper.Current()
		if ep == nil {
			return fmt.Errorf("worker config: %w", enclave.ErrKeeperClosed)
		}
		// Admission lets a connection write only the registry record its
		// evidence names.
		id := ep.Bundle.Worker.ID
		if c.ID == "" {
			c.ID = id
		}
		if c.ID != id {
			return fmt.Errorf("worker config: ID %q is not the evidence's worker id %q", c.ID, id)
		}
	}
	if c.ID == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("worker config: generating id: %w", err)
		}
		c.ID = "w-" + hex.EncodeToString(b[:])
	}
	if c.MaxConcurrency <= 0 {
		c.MaxConcurrency = 64
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = 4 * c.MaxConcurrency
	}
	if c.QueueWait <= 0 {
		c.QueueWait = 5 * time.Second
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = 30 * time.Second
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Worker serves an engine's models over NATS.
type Worker struct {
	cfg      Config
	sem      chan struct{}
	waiting  atomic.Int64
	served   atomic.Int64
	log      *slog.Logger
	inflight sync.WaitGroup
	notary   atomic.Pointer[notaryBox]
	pub      *evidencePublisher
	metrics  *metrics
	tracer   trace.Tracer // nil without Config.Tracer
	nudgeCh  chan struct{}
	retiring sync.WaitGroup // connections draining in the background

	// connMu serializes connection changes (Start, the admission loop).
	connMu sync.Mutex

	mu      sync.Mutex
	models  []engine.Model
	cur     *serving // where requests are taken; nil while not admitted
	quar    *serving // the quarantined connection while not admitted
	state   AdmissionState
	record  wire.WorkerRecord
	ctx     context.Context
	cancel  context.CancelFunc
	hbDone  chan struct{}
	runDone chan struct{}
	started bool
	stopped bool
}

type notaryBox struct{ n Notary }

// serving is one NATS connection and what the worker runs on it.
type serving struct {
	nc    *nats.Conn
	own   bool   // the worker dialed it and closes it
	open  bool   // no admission service judged it
	epoch string // the evidence id it presented ("" for Conn)
	svc   micro.Service
	nkey  string             // the key it proved ("" for Conn)
	kv    jetstream.KeyValue // registry
	ev    jetstream.KeyValue // evidence, only on a bus without admission
	// flagged: the server asked this connection to go (lame-duck notice)
	// or refused one of its subscriptions; it needs replacing.
	flagged  atomic.Bool
	active   atomic.Bool // it serves (serveOn succeeded)
	inflight sync.WaitGroup
}

// New validates cfg and returns a Worker; Start makes it serve.
func New(cfg Config) (*Worker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, sem: make(chan struct{}, cfg.MaxConcurrency), log: cfg.Logger.With("worker", cfg.ID),
		nudgeCh: make(chan struct{}, 1), pub: &evidencePublisher{known: map[string]bool{}}}
	if cfg.Notary != nil {
		w.notary.Store(&notaryBox{cfg.Notary})
	}
	if cfg.Metrics != nil {
		m, err := newMetrics(cfg.Metrics, w)
		if err != nil {
			return nil, fmt.Errorf("worker config: registering metrics: %w", err)
		}
		w.metrics = m
	}
	if cfg.Tracer != nil {
		w.tracer = cfg.Tracer.Tracer(tracerName)
	}
	return w, nil
}

// ID returns the worker id.
func (w *Worker) ID() string { return w.cfg.ID }

// Served counts the requests this worker took, over every connection.
func (w *Worker) Served() int64 { return w.served.Load() }

func (w *Worker) getNotary() Notary {
	if b := w.notary.Load(); b != nil {
		return b.n
	}
	return nil
}

// Start discovers the engine's models, subscribes to their subjects and
// publishes the registry record. Requests are served until Stop. With a
// Keeper, Start makes the first admission attempt (connect, submit the
// evidence, reconnect admitted) and returns its outcome in Admission: a
// worker the policy refuses starts anyway, serves nothing, and asks again
// every RetryInterval. Start fails only when it could not ask.
func (w *Worker) Start(ctx context.Context) error {
	models, err := w.cfg.Engine.Models(ctx)
	if err != nil {
		return fmt.Errorf("starting worker: listing models: %w", err)
	}
	if len(models) == 0 {
		return errors.New("starting worker: engine serves no models")
	}
	if w.cfg.Keeper != nil {
		named := map[string]bool{}
		for _, m := range w.cfg.Keeper.Current().Bundle.Worker.Models {
			named[m] = true
		}
		for _, m := range models {
			if !named[m.ID] {
				return fmt.Errorf("starting worker: the evidence does not name model %q, so no admission would let the worker serve it", m.ID)
			}
		}
	}
	rec := wire.WorkerRecord{
		ID: w.cfg.ID, Version: wire.Version, TEE: w.cfg.TEE,
		MaxConcurrency: w.cfg.MaxConcurrency, StartedAt: time.Now().UTC(),
	}
	for _, m := range models {
		rec.Models = append(rec.Models, wire.ModelInfo{ID: m.ID, Created: m.Created, OwnedBy: m.OwnedBy})
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		cancel()
		return errors.New("starting worker: already started")
	}
	w.started = true
	w.models, w.record, w.ctx, w.cancel = models, rec, wctx, cancel
	w.mu.Unlock()
	fail := func(err error) error {
		cancel()
		w.mu.Lock()
		cur, quar := w.cur, w.quar
		w.cur, w.quar, w.stopped = nil, nil, true
		w.mu.Unlock()
		w.closeServing(cur)
		w.closeServing(quar)
		return err
	}
	if w.cfg.Conn != nil {
		sv := &serving{nc: w.cfg.Conn}
		if err := w.serveOn(ctx, sv); err != nil {
			return fail(fmt.Errorf("starting worker: %w", err))
		}
		w.mu.Lock()
		w.cur = sv
		w.state = AdmissionState{Admitted: true, Open: true}
		w.mu.Unlock()
		if err := w.publishRecord(ctx); err != nil {
			return fail(fmt.Errorf("starting worker: %w", err))
		}
	} else {
		jctx, jcancel := context.WithTimeout(ctx, time.Minute)
		err := w.reconcile(jctx)
		jcancel()
		if err != nil {
			return fail(fmt.Errorf("starting worker: %w", err))
		}
	}
	w.hbDone = make(chan struct{})
	go w.heartbeat()
	if w.cfg.Keeper != nil {
		w.runDone = make(chan struct{})
		go w.run()
	}
	st := w.Admission()
	w.log.Info("worker started", "models", len(rec.Models), "max_concurrency", w.cfg.MaxConcurrency,
		"admitted", st.Admitted, "reasons", st.Reasons)
	return nil
}

// EnsureRegistry creates or opens the worker registry bucket.
func EnsureRegistry(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := wire.EnsureBucket(ctx, js, wire.RegistryConfig())
	if err != nil {
		return nil, fmt.Errorf("opening worker registry: %w", err)
	}
	return kv, nil
}

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
	models := w.models
	w.mu.Unlock()
	for i, m := range models {
		err := svc.AddEndpoint(fmt.Sprintf("model-%d", i), micro.HandlerFunc(func(r micro.Request) { w.dispatch(sv, r) }),
			micro.WithEndpointSubject(wire.InferSubject(m.ID)),
			micro.WithEndpointQueueGroup(wire.QueueGroup),
			micro.WithEndpointMetadata(map[string]string{"model": m.ID}))
		if err != nil {
			_ = svc.Stop()
			return fmt.Errorf("adding endpoint for a model: %w", err)
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

func (w *Worker) publishRecord(ctx context.Context) error {
	w.mu.Lock()
	sv := w.cur
	if sv == nil {
		w.mu.Unlock()
		return nil
	}
	w.record.HeartbeatAt = time.Now().UTC()
	switch n := w.getNotary(); {
	case sv.epoch != "":
		w.record.EvidenceID = sv.epoch
	case n != nil:
		w.record.EvidenceID = n.EvidenceID()
	}
	b, err := json.Marshal(w.record)
	w.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encoding registry record: %w", err)
	}
	if _, err := sv.kv.Put(ctx, w.recordKey(sv), b); err != nil {
		return fmt.Errorf("publishing registry record: %w", err)
	}
	return nil
}

// recordKey is the registry key of sv's record: the evidence id it was
// admitted on (the only key its permissions let it write), or the worker id
// on a connection with static credentials.
func (w *Worker) recordKey(sv *serving) string {
	if sv.epoch != "" {
		return sv.epoch
	}
	return w.cfg.ID
}

func (w *Worker) heartbeat() {
	defer close(w.hbDone)
	t := time.NewTicker(w.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
			if k := w.cfg.Keeper; k != nil {
				// A new key epoch needs a new connection: it is how the
				// worker notices the keeper's rotations.
				w.mu.Lock()
				cur := w.cur
				w.mu.Unlock()
				if ep := k.Current(); cur != nil && ep != nil && ep.ID != cur.epoch && !cur.flagged.Load() {
					w.nudge()
				}
			}
			ctx, cancel := context.WithTimeout(w.ctx, w.cfg.Heartbeat)
			if err := w.publishRecord(ctx); err != nil && w.ctx.Err() == nil {
				w.log.Warn("heartbeat failed", "err", err)
			}
			cancel()
		}
	}
}

// Stop withdraws the worker: removes its registry record, stops taking
// requests, and waits (until ctx ends) for requests in flight to finish.
// It closes the connections the worker dialed.
func (w *Worker) Stop(ctx context.Context) error {
	w.mu.Lock()
	if w.stopped || !w.started {
		w.mu.Unlock()
		return nil
	}
	w.stopped = true
	w.mu.Unlock()
	w.cancel()
	<-w.hbDone
	if w.runDone != nil {
		<-w.runDone
	}
	w.mu.Lock()
	cur, quar := w.cur, w.quar
	w.cur, w.quar = nil, nil
	w.mu.Unlock()
	w.pub.setTarget(nil)
	var errs []error
	if cur != nil {
		if err := cur.kv.Delete(ctx, w.recordKey(cur)); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, fmt.Errorf("removing registry record: %w", err))
		}
		if err := cur.svc.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping service: %w", err))
		}
	}
	done := make(chan struct{})
	go func() { w.inflight.Wait(); w.retiring.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("waiting for requests in flight: %w", ctx.Err()))
	}
	w.closeServing(cur)
	w.closeServing(quar)
	return errors.Join(errs...)
}

// closeServing closes sv's connection if the worker owns it.
func (w *Worker) closeServing(sv *serving) {
	if sv != nil && sv.own {
		sv.nc.Close()
	}
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
}

func (w *Worker) end(sv *serving) {
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

// stream relays payloads to the requester's inbox with flow control.
func (w *Worker) stream(ctx context.Context, cancel context.CancelFunc, sv *serving, req micro.Request, h nats.Header, meta Meta, s engine.Stream) (int, error) {
	defer s.Close()
	inbox := req.Reply()
	nc, epoch := sv.nc, sv.epoch
	window := wire.IntHeader(h, wire.HdrWindow, wire.DefaultWindow)
	if window == 0 {
		window = wire.DefaultWindow
	}
	// The ack subject lies in this connection's own inbox space (the
	// gateway publishes nowhere else) and is random: nobody else can
	// guess it to cancel this stream.
	ackSubj := nc.NewInbox() + "." + randomToken()
	acks := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(ackSubj, acks)
	if err != nil {
		return 0, fmt.Errorf("subscribing for acks: %w", err)
	}
	defer sub.Unsubscribe()

	var notary StreamNotary
	if n := w.getNotary(); n != nil {
		notary = n.Stream(ctx, meta, req.Data())
	}
	// The control loop applies acks and cancels while the main loop may be
	// blocked in the engine: a cancel must interrupt generation itself.
	var acked atomic.Int64
	credit := make(chan struct{}, 1)
	gone := make(chan struct{})
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-acks:
				if wire.IsNoResponders(m) || m.Header.Get(wire.HdrCancel) != "" {
					close(gone)
					cancel()
					return
				}
				if a := int64(wire.IntHeader(m.Header, wire.HdrAck, -1)); a > acked.Load() {
					acked.Store(a)
					select {
					case credit <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	wentAway := func() bool {
		select {
		case <-gone:
			return true
		default:
			return false
		}
	}
	seq := 0
	responsesAPI := meta.Op == wire.OpResponses
	send := func(kind string, data []byte, status int, event string) error {
		msg := nats.NewMsg(inbox)
		msg.Header.Set(wire.HdrKind, kind)
		msg.Header.Set(wire.HdrWorker, w.cfg.ID)
		if event != "" {
			msg.Header.Set(wire.HdrEvent, event)
		}
		if kind == wire.KindData {
			seq++
			msg.Header.Set(wire.HdrSeq, strconv.Itoa(seq))
			msg.Reply = ackSubj
			if epoch != "" {
				// Names the key whose inbox space ackSubj lies in.
				msg.Header.Set(wire.HdrEvidenceID, epoch)
			}
		} else {
			msg.Header.Set(wire.HdrSeq, strconv.Itoa(seq+1))
			msg.Header.Set(wire.HdrStatus, strconv.Itoa(status))
		}
		msg.Data = data
		if err := nc.PublishMsg(msg); err != nil {
			return fmt.Errorf("publishing chunk: %w", err)
		}
		return nil
	}
	for {
		// Wait for credit when the window is full.
		for int64(seq)-acked.Load() >= int64(window) {
			timer := time.NewTimer(w.cfg.AckTimeout)
			select {
			case <-credit:
				timer.Stop()
			case <-ctx.Done():
				timer.Stop()
				if wentAway() {
					return seq, errors.New("client went away")
				}
				return seq, fmt.Errorf("waiting for credit: %w", ctx.Err())
			case <-timer.C:
				cancel()
				return seq, errors.New("waiting for credit: client stopped reading")
			}
		}
		// failed sends an error: before any chunk as an HTTP error body; in
		// a Responses stream that started, as its "error" event.
		failed := func(e *engine.Error) {
			if responsesAPI && seq > 0 {
				_ = send(wire.KindError, responses.ErrorEvent(int64(seq), e), e.Status, "error")
				return
			}
			_ = send(wire.KindError, e.Body(), e.Status, "")
		}
		payload, err := s.Next(ctx)
		if errors.Is(err, io.EOF) {
			var final []byte
			if notary != nil {
				signStart := time.Now()
				final, err = notary.Finish(ctx)
				w.metrics.signed("stream", signStart)
				if err != nil {
					failed(engine.Errorf(http.StatusInternalServerError, "server_error", "", "receipt_failed", "The worker could not issue a receipt."))
					return seq, fmt.Errorf("finishing receipt: %w", err)
				}
			}
			event := ""
			if responsesAPI && final != nil {
				event = attest.ResponsesReceiptEvent
			}
			return seq, send(wire.KindEnd, final, http.StatusOK, event)
		}
		if err != nil {
			e, ok := engine.AsError(err)
			if !ok {
				if wentAway() {
					return seq, errors.New("client went away")
				}
				if ctx.Err() != nil {
					return seq, fmt.Errorf("generating: %w", ctx.Err())
				}
				e = engine.Errorf(http.StatusInternalServerError, "server_error", "", "", "The engine failed while streaming.")
			}
			failed(e)
			return seq, fmt.Errorf("generating: %w", err)
		}
		event := ""
		if responsesAPI {
			event = engine.EventOf(s)
		}
		if responsesAPI && !wire.ValidEventName(event) {
			failed(engine.Errorf(http.StatusBadGateway, "server_error", "", "bad_response", "The engine sent a stream event without a valid name."))
			return seq, errors.New("generating: engine event without a valid name")
		}
		if meta.UsageHidden && isUsageChunk(payload) {
			// The usage chunk the client did not ask for: its usage goes
			// into the receipt, the chunk nowhere.
			if notary != nil {
				notary.Usage(payload)
			}
			continue
		}
		if notary != nil {
			notary.Add(event, payload)
		}
		if err := send(wire.KindData, payload, 0, event); err != nil {
			return seq, err
		}
	}
}

// randomToken is 128 random bits as one subject token.
func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// asksUsage reports whether a stream request's body sets
// stream_options.include_usage to true.
func asksUsage(body []byte) bool {
	var r struct {
		StreamOptions *struct {
			IncludeUsage *bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if json.Unmarshal(body, &r) != nil || r.StreamOptions == nil || r.StreamOptions.IncludeUsage == nil {
		return false
	}
	return *r.StreamOptions.IncludeUsage
}

// isUsageChunk reports whether a stream payload is the usage chunk of
// stream_options.include_usage: "choices" an empty array and "usage" an
// object.
func isUsageChunk(p []byte) bool {
	if !mayHaveUsage(p) {
		return false
	}
	var c struct {
		Choices *[]json.RawMessage `json:"choices"`
		Usage   *json.RawMessage   `json:"usage"`
	}
	if json.Unmarshal(p, &c) != nil || c.Choices == nil || len(*c.Choices) != 0 || c.Usage == nil {
		return false
	}
	return len(*c.Usage) > 0 && (*c.Usage)[0] == '{'
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "req_" + hex.EncodeToString(b[:])
}
