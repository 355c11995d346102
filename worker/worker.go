package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/worker/engine"
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
	// connect by its evidence (DESIGN §4, join.go): a connection per key
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
	// MaxConcurrency bounds requests served at once (default 64); the
	// registry record advertises it and gateways never exceed it.
	MaxConcurrency int
	// ModelRefresh is how often the worker asks an engine whose models may
	// change (engine.Refresher) for its list (default DefaultModelRefresh):
	// a change re-advertises the worker (models.go), a failure makes its
	// record not ready until the engine answers again.
	ModelRefresh time.Duration
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
	if c.ModelRefresh <= 0 {
		c.ModelRefresh = DefaultModelRefresh
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
	// ready: the engine answered the last model refresh; draining: the
	// worker takes no new work (both advertised in the record).
	ready    atomic.Bool
	draining atomic.Bool
	// published is the in-flight count the record showed last; pubCh
	// asks the heartbeat to publish before its tick (models.go).
	inFlight  atomic.Int64
	published atomic.Int64
	pubCh     chan struct{}
	refDone   chan struct{}
	retiring  sync.WaitGroup // connections draining in the background
	// idleCh is signalled when the in-flight count drops to zero, lastEnd
	// is when a request last ended (unix nanos): what Drain and Idle wait
	// on.
	idleCh  chan struct{}
	lastEnd atomic.Int64

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
	ctl      *control    // its requests' control subjects
	inflight sync.WaitGroup
	// models are what this connection serves (set by serveOn): the
	// record published on it lists them, and no others.
	models []engine.Model
}

// New validates cfg and returns a Worker; Start makes it serve.
func New(cfg Config) (*Worker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, sem: make(chan struct{}, cfg.MaxConcurrency), log: cfg.Logger.With("worker", cfg.ID),
		nudgeCh: make(chan struct{}, 1), pubCh: make(chan struct{}, 1), idleCh: make(chan struct{}, 1), pub: &evidencePublisher{known: map[string]bool{}}}
	w.lastEnd.Store(time.Now().UnixNano())
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
		w.ready.Store(true)
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
		w.ready.Store(true)
		jctx, jcancel := context.WithTimeout(ctx, time.Minute)
		err := w.reconcile(jctx)
		jcancel()
		if err != nil {
			return fail(fmt.Errorf("starting worker: %w", err))
		}
	}
	w.hbDone = make(chan struct{})
	go w.heartbeat()
	if r, ok := w.cfg.Engine.(engine.Refresher); ok {
		w.refDone = make(chan struct{})
		go w.refreshModels(r)
	}
	if w.cfg.Keeper != nil {
		w.runDone = make(chan struct{})
		go w.run()
	}
	st := w.Admission()
	w.log.Info("worker started", "models", len(rec.Models), "max_concurrency", w.cfg.MaxConcurrency,
		"admitted", st.Admitted, "reasons", st.Reasons)
	return nil
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
	if w.refDone != nil {
		<-w.refDone
	}
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

// closeServing closes sv's connection if the worker owns it, else its
// control subscription.
func (w *Worker) closeServing(sv *serving) {
	if sv == nil {
		return
	}
	if sv.own {
		sv.nc.Close()
		return
	}
	sv.ctl.close()
}
