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

	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/wire"
)

// Config configures a Worker. Conn and Engine are required.
type Config struct {
	Conn   *nats.Conn
	Engine engine.Engine
	// ID names the worker; default a random id.
	ID string
	// MaxConcurrency bounds requests served at once. Default 64.
	MaxConcurrency int
	// MaxQueue bounds requests waiting for a slot (default 4×MaxConcurrency)
	// and QueueWait how long each may wait (default 5s); past either the
	// worker answers "busy" so the gateway tries another.
	MaxQueue  int
	QueueWait time.Duration
	// Heartbeat is how often the registry record is refreshed. Default 5s.
	Heartbeat time.Duration
	// AckTimeout bounds the wait for flow-control credit in a stream; a
	// client that reads nothing for this long loses its stream. Default 30s.
	AckTimeout time.Duration
	// Notary, when set, issues receipts for responses.
	Notary Notary
	// TEE is the evidence kind announced in the registry (informational).
	TEE    string
	Logger *slog.Logger
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
	// payload in order and Finish returns the final payload (the receipt
	// chunk) to send before the end of the stream, or nil.
	Stream(ctx context.Context, meta Meta, request []byte) StreamNotary
}

// StreamNotary accumulates a stream's payloads for its receipt.
type StreamNotary interface {
	Add(payload []byte)
	Finish(ctx context.Context) ([]byte, error)
}

// Meta is the request metadata a receipt covers besides the bytes.
type Meta struct {
	RequestID string
	Model     string
	Op        string
	Nonce     string
	Inline    bool
}

func (c *Config) validate() error {
	if c.Conn == nil {
		return errors.New("worker config: Conn is required")
	}
	if c.Engine == nil {
		return errors.New("worker config: Engine is required")
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
	log      *slog.Logger
	inflight sync.WaitGroup

	mu      sync.Mutex
	svc     micro.Service
	kv      jetstream.KeyValue
	record  wire.WorkerRecord
	ctx     context.Context
	cancel  context.CancelFunc
	hbDone  chan struct{}
	stopped bool
}

// New validates cfg and returns a Worker; Start makes it serve.
func New(cfg Config) (*Worker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg, sem: make(chan struct{}, cfg.MaxConcurrency), log: cfg.Logger.With("worker", cfg.ID)}, nil
}

// ID returns the worker id.
func (w *Worker) ID() string { return w.cfg.ID }

// Start discovers the engine's models, subscribes to their subjects and
// publishes the registry record. Requests are served until Stop.
func (w *Worker) Start(ctx context.Context) error {
	models, err := w.cfg.Engine.Models(ctx)
	if err != nil {
		return fmt.Errorf("starting worker: listing models: %w", err)
	}
	if len(models) == 0 {
		return errors.New("starting worker: engine serves no models")
	}
	js, err := jetstream.New(w.cfg.Conn)
	if err != nil {
		return fmt.Errorf("starting worker: %w", err)
	}
	kv, err := EnsureRegistry(ctx, js)
	if err != nil {
		return fmt.Errorf("starting worker: %w", err)
	}
	svc, err := micro.AddService(w.cfg.Conn, micro.Config{
		Name:        wire.ServiceName,
		Version:     "0.1.0",
		Description: "teegate worker",
		Metadata:    map[string]string{"worker_id": w.cfg.ID, "wire": wire.Version},
	})
	if err != nil {
		return fmt.Errorf("starting worker: adding service: %w", err)
	}
	rec := wire.WorkerRecord{
		ID: w.cfg.ID, Version: wire.Version, TEE: w.cfg.TEE,
		MaxConcurrency: w.cfg.MaxConcurrency, StartedAt: time.Now().UTC(),
	}
	for i, m := range models {
		err := svc.AddEndpoint(fmt.Sprintf("model-%d", i), micro.HandlerFunc(w.dispatch),
			micro.WithEndpointSubject(wire.InferSubject(m.ID)),
			micro.WithEndpointQueueGroup(wire.QueueGroup),
			micro.WithEndpointMetadata(map[string]string{"model": m.ID}))
		if err != nil {
			_ = svc.Stop()
			return fmt.Errorf("starting worker: adding endpoint for a model: %w", err)
		}
		err = svc.AddEndpoint(fmt.Sprintf("attest-%d", i), micro.HandlerFunc(w.dispatchAttest),
			micro.WithEndpointSubject(wire.AttestSubject(m.ID)),
			micro.WithEndpointQueueGroup(wire.QueueGroup),
			micro.WithEndpointMetadata(map[string]string{"model": m.ID}))
		if err != nil {
			_ = svc.Stop()
			return fmt.Errorf("starting worker: adding attestation endpoint: %w", err)
		}
		rec.Models = append(rec.Models, wire.ModelInfo{ID: m.ID, Created: m.Created, OwnedBy: m.OwnedBy})
	}
	if w.cfg.Notary != nil {
		rec.EvidenceID = w.cfg.Notary.EvidenceID()
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.mu.Lock()
	w.svc, w.kv, w.record, w.ctx, w.cancel = svc, kv, rec, wctx, cancel
	w.hbDone = make(chan struct{})
	w.mu.Unlock()
	if err := w.publishRecord(ctx); err != nil {
		_ = svc.Stop()
		cancel()
		return fmt.Errorf("starting worker: %w", err)
	}
	go w.heartbeat()
	w.log.Info("worker started", "models", len(rec.Models), "max_concurrency", w.cfg.MaxConcurrency)
	return nil
}

// EnsureRegistry creates or opens the worker registry bucket.
func EnsureRegistry(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      wire.RegistryBucket,
		Description: "teegate worker registry",
		History:     1,
		TTL:         wire.RecordTTL * 4,
	})
	if err != nil {
		return nil, fmt.Errorf("opening worker registry: %w", err)
	}
	return kv, nil
}

func (w *Worker) publishRecord(ctx context.Context) error {
	w.mu.Lock()
	w.record.HeartbeatAt = time.Now().UTC()
	if w.cfg.Notary != nil {
		w.record.EvidenceID = w.cfg.Notary.EvidenceID()
	}
	b, err := json.Marshal(w.record)
	kv := w.kv
	w.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encoding registry record: %w", err)
	}
	if _, err := kv.Put(ctx, w.cfg.ID, b); err != nil {
		return fmt.Errorf("publishing registry record: %w", err)
	}
	return nil
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
func (w *Worker) Stop(ctx context.Context) error {
	w.mu.Lock()
	if w.stopped || w.svc == nil {
		w.mu.Unlock()
		return nil
	}
	w.stopped = true
	svc, kv := w.svc, w.kv
	w.mu.Unlock()
	w.cancel()
	<-w.hbDone
	var errs []error
	if err := kv.Delete(ctx, w.cfg.ID); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		errs = append(errs, fmt.Errorf("removing registry record: %w", err))
	}
	if err := svc.Stop(); err != nil {
		errs = append(errs, fmt.Errorf("stopping service: %w", err))
	}
	done := make(chan struct{})
	go func() { w.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("waiting for requests in flight: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

// dispatchAttest answers a request for fresh evidence.
func (w *Worker) dispatchAttest(req micro.Request) {
	if w.cfg.Notary == nil {
		w.replyError(req, http.StatusNotImplemented, wire.CodeInternal,
			engine.Errorf(http.StatusNotImplemented, "server_error", "", "no_attestation", "This worker has no attestation."))
		return
	}
	nonce := nats.Header(req.Headers()).Get(wire.HdrNonce)
	w.inflight.Add(1)
	go func() {
		defer w.inflight.Done()
		ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
		defer cancel()
		raw, err := w.cfg.Notary.Attest(ctx, nonce)
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

// dispatch runs in the subscription's goroutine: it must not block.
func (w *Worker) dispatch(req micro.Request) {
	busy := func() {
		w.replyError(req, http.StatusServiceUnavailable, wire.CodeBusy,
			engine.Errorf(http.StatusServiceUnavailable, "server_error", "", "worker_busy", "The worker is at capacity. Retry shortly."))
	}
	run := func() {
		defer func() {
			<-w.sem
			w.inflight.Done()
		}()
		w.serve(req)
	}
	select {
	case w.sem <- struct{}{}:
		w.inflight.Add(1)
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
	w.inflight.Add(1)
	go func() {
		t := time.NewTimer(w.cfg.QueueWait)
		defer t.Stop()
		select {
		case w.sem <- struct{}{}:
			w.waiting.Add(-1)
			run()
		case <-t.C:
			w.waiting.Add(-1)
			w.inflight.Done()
			busy()
		case <-w.ctx.Done():
			w.waiting.Add(-1)
			w.inflight.Done()
			busy()
		}
	}()
}

func (w *Worker) serve(req micro.Request) {
	start := time.Now()
	h := nats.Header(req.Headers())
	reqID := h.Get(wire.HdrRequestID)
	log := w.log.With("request_id", reqID)
	if v := h.Get(wire.HdrVersion); v != wire.Version {
		w.replyError(req, http.StatusServiceUnavailable, wire.CodeVersion,
			engine.Errorf(http.StatusServiceUnavailable, "server_error", "", "protocol_version", "The worker speaks another protocol version."))
		return
	}
	op := engine.Op(h.Get(wire.HdrOp))
	if !op.Valid() {
		w.replyError(req, http.StatusBadRequest, wire.CodeBad, engine.InvalidRequest("", "Unknown operation."))
		return
	}
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	if dl, ok := wire.Deadline(h); ok {
		var c2 context.CancelFunc
		ctx, c2 = context.WithDeadline(ctx, dl)
		defer c2()
	}
	meta := Meta{RequestID: reqID, Model: h.Get(wire.HdrModel), Op: string(op), Nonce: h.Get(wire.HdrNonce), Inline: h.Get(wire.HdrInline) != ""}
	call := engine.Call{Op: op, Body: req.Data(), Stream: h.Get(wire.HdrStream) == "1", RequestID: reqID}
	if call.Stream && req.Reply() == "" {
		w.replyError(req, http.StatusBadRequest, wire.CodeBad, engine.InvalidRequest("", "A stream needs a reply inbox."))
		return
	}
	res, err := w.cfg.Engine.Do(ctx, call)
	if err != nil {
		status := w.replyEngineError(req, ctx, err)
		log.Info("request failed", "op", op, "status", status, "ms", time.Since(start).Milliseconds())
		return
	}
	if call.Stream {
		n, err := w.stream(ctx, cancel, req, h, meta, res.Stream)
		if err != nil {
			log.Info("stream ended early", "op", op, "chunks", n, "err", err)
			return
		}
		log.Info("stream served", "op", op, "chunks", n, "ms", time.Since(start).Milliseconds())
		return
	}
	hdr := nats.Header{}
	if w.cfg.Notary != nil {
		sh, err := w.cfg.Notary.Seal(ctx, meta, call.Body, res.Body)
		if err != nil {
			log.Error("sealing receipt failed", "err", err)
			w.replyError(req, http.StatusInternalServerError, wire.CodeInternal,
				engine.Errorf(http.StatusInternalServerError, "server_error", "", "receipt_failed", "The worker could not issue a receipt."))
			return
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
		return
	}
	log.Info("request served", "op", op, "status", 200, "ms", time.Since(start).Milliseconds())
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
func (w *Worker) stream(ctx context.Context, cancel context.CancelFunc, req micro.Request, h nats.Header, meta Meta, s engine.Stream) (int, error) {
	defer s.Close()
	nc := w.cfg.Conn
	inbox := req.Reply()
	window := wire.IntHeader(h, wire.HdrWindow, wire.DefaultWindow)
	if window == 0 {
		window = wire.DefaultWindow
	}
	ackSubj := nc.NewRespInbox()
	acks := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(ackSubj, acks)
	if err != nil {
		return 0, fmt.Errorf("subscribing for acks: %w", err)
	}
	defer sub.Unsubscribe()

	var notary StreamNotary
	if w.cfg.Notary != nil {
		notary = w.cfg.Notary.Stream(ctx, meta, req.Data())
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
	send := func(kind string, data []byte, status int) error {
		msg := nats.NewMsg(inbox)
		msg.Header.Set(wire.HdrKind, kind)
		msg.Header.Set(wire.HdrWorker, w.cfg.ID)
		if kind == wire.KindData {
			seq++
			msg.Header.Set(wire.HdrSeq, strconv.Itoa(seq))
			msg.Reply = ackSubj
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
		payload, err := s.Next(ctx)
		if errors.Is(err, io.EOF) {
			var final []byte
			if notary != nil {
				final, err = notary.Finish(ctx)
				if err != nil {
					e := engine.Errorf(http.StatusInternalServerError, "server_error", "", "receipt_failed", "The worker could not issue a receipt.")
					_ = send(wire.KindError, e.Body(), e.Status)
					return seq, fmt.Errorf("finishing receipt: %w", err)
				}
			}
			return seq, send(wire.KindEnd, final, http.StatusOK)
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
			_ = send(wire.KindError, e.Body(), e.Status)
			return seq, fmt.Errorf("generating: %w", err)
		}
		if notary != nil {
			notary.Add(payload)
		}
		if err := send(wire.KindData, payload, 0); err != nil {
			return seq, err
		}
	}
}
