package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/teegate/teegate/gateway/ui"
	"github.com/teegate/teegate/worker/wire"
)

// Config configures a Gateway. Conn, Keys and Directory are required.
type Config struct {
	Conn      *nats.Conn
	Keys      KeyStore
	Directory Directory
	// BodyLimit is the largest request body accepted (413 beyond). Default 4 MiB.
	BodyLimit int
	// RequestTimeout bounds a whole request (504 beyond). Default 10 min.
	RequestTimeout time.Duration
	// DefaultRPM is the requests per minute of keys that set none (0:
	// unlimited). Counted in Limits, shared by every replica.
	DefaultRPM int64
	// Limits holds the shared counters of per-key limits and budgets;
	// required when DefaultRPM is set or keys carry limits (a key with
	// limits and no Limits is refused: fail closed).
	Limits *Limits
	// Audit, when set, receives a record of every receipt relayed and
	// every request refused by a limit (package audit).
	Audit AuditLog
	// StreamWindow is the flow-control window (chunks in flight) per stream.
	StreamWindow int
	// StreamProbe is how often a stream that received nothing from its
	// worker since the last probe checks that the worker is still there
	// (default 5 s); a worker that died mid-stream ends the stream with a
	// worker_gone error event instead of leaving it open until the deadline.
	StreamProbe time.Duration
	// Attempts is how many workers a request may try when they are busy.
	Attempts int
	// AcceptTimeout is how long the gateway waits for a worker it sent a
	// request by its key to accept it (wire.KindAccept) before it counts
	// the request lost with its worker and dispatches it once more
	// (default 3 s; not on the queue group, see await); DispatchProbe
	// how often it checks that the worker holding an accepted request that
	// sent no byte yet is still there (default 1 s). See dispatch.go.
	AcceptTimeout time.Duration
	DispatchProbe time.Duration
	Logger        *slog.Logger
	// Evidence is the evidence bucket (wire.EvidenceBucket) served at
	// /v1/attestation/evidence/{id}; Receipts the receipts bucket. Either may
	// be nil: those endpoints then answer 501.
	Evidence jetstream.KeyValue
	Receipts jetstream.KeyValue
	// Admission, when set, is the admission service that judges workers
	// (DESIGN §4): GET /v1/attestation/workers lists its decisions, and a
	// model that only refused workers offer answers 503 "no attested
	// worker" instead of 404.
	Admission Admissions
	// Unattested: workers have no TEE (a stack without attestation). A
	// success reply then needs no receipt, and stream acks may go to any
	// literal inbox subject. Otherwise (the default) a success without a
	// well-formed receipt for its request is refused as a worker error, and
	// acks go only to the inbox space of the key the worker's evidence
	// binds, looked up in Evidence.
	Unattested bool
	// WriteStall is how long one write to a stream's client may block: a
	// client that reads nothing for this long loses its stream and its
	// connection (default 15 s), so neither the request deadline nor a
	// shutdown waits on it.
	WriteStall time.Duration
	// Now is the clock (tests inject one). Default time.Now.
	Now func() time.Time
	// Metrics, when set, receives the gateway's Prometheus metrics and is
	// served at GET /metrics (it may hold other components' metrics too:
	// teegate dev registers its workers' there). Nil: no metrics.
	Metrics *prometheus.Registry
	// Tracer, when set, traces each request and carries the W3C trace
	// context to the worker in NATS headers. Nil: no spans.
	Tracer trace.TracerProvider
	// ReadyWithoutWorkers makes GET /readyz ready while NATS is connected
	// even when no worker can serve (fleets that scale workers from zero:
	// the gateway must take requests for the cold-start queue). By default
	// /readyz fails while no live worker is ready and not draining.
	ReadyWithoutWorkers bool
	// AuditState, when set, reports the audit chain's state at GET
	// /v1/audit/state (admin keys; the /ui page shows it). Nil: 501.
	AuditState func(ctx context.Context) (any, error)
	// Pending, when set, is the cold-start queue (OpenPending): a request
	// for a known model that no worker can take now waits there for one.
	// Nil: it is answered 503 at once. The gateway keeps the queue's model
	// memory fed from Directory; the caller closes it after Shutdown.
	Pending *Pending
	// MaxInflight and MaxInflightPerModel bound the requests the gateway
	// holds at once, in total and per model (shed.go); the excess is
	// answered 503 with Retry-After at once. 0: the registry's summed
	// max_concurrency (of the model's workers, per model) plus the cold-start
	// queue length.
	MaxInflight, MaxInflightPerModel int
}

func (c *Config) validate() error {
	if c.Conn == nil || c.Keys == nil || c.Directory == nil {
		return errors.New("gateway config: Conn, Keys and Directory are required")
	}
	if c.BodyLimit <= 0 {
		c.BodyLimit = 4 << 20
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Minute
	}
	if c.DefaultRPM < 0 {
		return errors.New("gateway config: DefaultRPM must be >= 0")
	}
	if c.DefaultRPM > 0 && c.Limits == nil {
		return errors.New("gateway config: DefaultRPM needs Limits")
	}
	if c.StreamWindow <= 0 {
		c.StreamWindow = wire.DefaultWindow
	}
	if c.StreamProbe <= 0 {
		c.StreamProbe = 5 * time.Second
	}
	if c.Attempts <= 0 {
		c.Attempts = 3
	}
	if c.AcceptTimeout <= 0 {
		c.AcceptTimeout = 3 * time.Second
	}
	if c.DispatchProbe <= 0 {
		c.DispatchProbe = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.WriteStall <= 0 {
		c.WriteStall = 15 * time.Second
	}
	if c.MaxInflight < 0 || c.MaxInflightPerModel < 0 {
		return errors.New("gateway config: MaxInflight and MaxInflightPerModel must be >= 0")
	}
	return nil
}

// Gateway is the HTTP edge.
type Gateway struct {
	cfg Config
	app *fiber.App
	log *slog.Logger

	receipts *receiptStore
	// inboxPrefix is this gateway's random reply-subject prefix; keys
	// resolves evidence ids to worker nkeys (nil without Evidence).
	inboxPrefix string
	keys        *workerKeys
	streams     streamSet
	metrics     *metrics
	tracer      trace.Tracer
	providers   sync.Map // evidence id → provider, from admission decisions
	picker      *picker  // requests in flight per worker connection (pick.go)
	busOnce     sync.Once
	busW        *busWatch // the connection's generations (buswatch.go)
	shed        shedder
}

// New builds a Gateway; Serve starts it.
func New(cfg Config) (*Gateway, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger,
		inboxPrefix: wire.GatewayInboxRoot + "." + randomHex(12), picker: newPicker()}
	g.streams.init()
	g.shed.g = g
	if cfg.Pending != nil {
		cfg.Pending.watch(cfg.Directory)
	}
	if cfg.Evidence != nil {
		g.keys = &workerKeys{kv: cfg.Evidence, m: map[string]string{}}
	}
	if cfg.Metrics != nil {
		m, err := newMetrics(cfg.Metrics, g)
		if err != nil {
			return nil, fmt.Errorf("gateway config: registering metrics: %w", err)
		}
		g.metrics = m
	}
	g.tracer = newTracer(cfg.Tracer)
	if cfg.Receipts != nil {
		rs, err := newReceiptStore(cfg.Conn, cfg.Receipts, cfg.Logger, g.metrics, func(m string) bool {
			_, ok := cfg.Directory.Model(m)
			return ok
		})
		if err != nil {
			return nil, fmt.Errorf("gateway config: %w", err)
		}
		g.receipts = rs
	}
	g.app = fiber.New(fiber.Config{
		AppName:               "teegate",
		BodyLimit:             cfg.BodyLimit,
		DisableStartupMessage: true,
		ErrorHandler:          g.errorHandler,
		ReadTimeout:           time.Minute,
		// Every response, streams included, must be written by the request
		// deadline (plus the time to say so): a client that stops reading
		// loses its connection instead of keeping it.
		WriteTimeout:      cfg.RequestTimeout + writeSlack,
		IdleTimeout:       2 * time.Minute,
		StreamRequestBody: false,
		// The request line and headers must fit here; beyond it the server
		// answers 431. A URL over maxURL gets 414 (common).
		ReadBufferSize: maxHeaderBytes,
		// The read buffer (ReadBufferSize) goes back to a pool once a
		// request is read, and the write buffer once a response is out:
		// a held stream or an idle keep-alive connection does not keep
		// 36 KiB of buffers (a stream's memory, docs/PERFORMANCE.md).
		ReduceMemoryUsage: true,
	})
	g.routes()
	return g, nil
}

func (g *Gateway) routes() {
	a := g.app
	a.Use(g.common)
	a.Get("/healthz", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "ok"}) })
	a.Get("/readyz", g.readyz)
	if g.cfg.Metrics != nil {
		a.Get("/metrics", metricsHandler(g.cfg.Metrics))
	}
	// The auditor page: static, embedded; its data calls carry the key.
	a.Get("/ui", ui.Handler())
	a.Get("/ui/*", ui.Handler())
	v1 := a.Group("/v1", g.auth)
	v1.Post("/chat/completions", g.infer(wire.OpChat))
	v1.Post("/completions", g.infer(wire.OpCompletions))
	v1.Post("/embeddings", g.infer(wire.OpEmbeddings))
	v1.Post("/responses", g.infer(wire.OpResponses))
	// Stateless: no response is stored to get, delete, cancel or list.
	v1.All("/responses/*", func(c *fiber.Ctx) error { return send(c, errNoStoredResponse()) })
	v1.Get("/models", g.listModels)
	v1.Get("/models/*", g.getModel)
	v1.Get("/attestation", g.freshEvidence)
	v1.Get("/attestation/workers", g.listWorkers)
	v1.Get("/attestation/evidence/:id", g.getEvidence)
	v1.Get("/attestation/receipts/:id", g.getReceipt)
	v1.Get("/audit/state", g.auditState)
	a.Use(func(c *fiber.Ctx) error { return send(c, errNotFound()) })
}

// App exposes the fiber app (tests use App().Test).
func (g *Gateway) App() *fiber.App { return g.app }

// Serve serves HTTP on ln until Shutdown.
func (g *Gateway) Serve(ln net.Listener) error {
	if err := g.app.Listener(ln); err != nil {
		return fmt.Errorf("serving http: %w", err)
	}
	return nil
}

// Shutdown stops accepting connections and waits for requests (streams
// included) to finish until ctx ends; streams still running when ctx ends
// are cut (their writes fail at once), so shutdown never waits longer.
func (g *Gateway) Shutdown(ctx context.Context) error {
	stop := context.AfterFunc(ctx, g.streams.cut)
	defer stop()
	err := g.app.ShutdownWithContext(ctx)
	if g.receipts != nil {
		g.receipts.close()
	}
	if err != nil {
		return fmt.Errorf("shutting down http: %w", err)
	}
	return nil
}

// Local keys on the fiber context.
const (
	localStart = "tg.start"
	localKey   = "tg.key"
	localReqID = "tg.reqid"
	localObs   = "tg.obs" // *reqObs of an inference request (metrics or tracing on)
)

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "req_" + hex.EncodeToString(b[:])
}

// common stamps every response with x-request-id and openai-processing-ms,
// and refuses requests whose framing is ambiguous (hygiene).
func (g *Gateway) common(c *fiber.Ctx) error {
	start := time.Now()
	id := newRequestID()
	c.Locals(localStart, start)
	c.Locals(localReqID, id)
	c.Set("x-request-id", id)
	var err error
	if e := hygiene(c); e != nil {
		err = send(c, e)
	} else {
		err = c.Next()
	}
	if err != nil {
		if herr := g.errorHandler(c, err); herr != nil {
			return herr
		}
	}
	g.done(c)
	// Streams set their own value when headers go out.
	if len(c.Response().Header.Peek("openai-processing-ms")) == 0 {
		c.Set("openai-processing-ms", strconv.FormatInt(time.Since(start).Milliseconds(), 10))
	}
	return nil
}

// errorHandler maps fiber's own errors (404, 405, 413 from the server)
// into OpenAI-shaped bodies.
func (g *Gateway) errorHandler(c *fiber.Ctx, err error) error {
	// Errors raised before the middleware ran (a body over the limit) still
	// get the headers every response carries.
	if len(c.Response().Header.Peek("x-request-id")) == 0 {
		c.Set("x-request-id", newRequestID())
		c.Set("openai-processing-ms", "0")
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return send(c, ae)
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		switch fe.Code {
		case fiber.StatusRequestEntityTooLarge:
			return send(c, errTooLarge(g.cfg.BodyLimit))
		case fiber.StatusNotFound:
			return send(c, errNotFound())
		case fiber.StatusMethodNotAllowed:
			return send(c, errMethod())
		case fiber.StatusBadRequest:
			return send(c, errInvalid("", "Bad request."))
		case fiber.StatusRequestHeaderFieldsTooLarge:
			return send(c, errHeadersTooLarge())
		case fiber.StatusRequestTimeout:
			return send(c, &APIError{Status: http.StatusRequestTimeout, Type: "invalid_request_error", Code: "request_timeout",
				Message: "The request was not received in time."})
		}
	}
	g.log.Error("request failed", "err", err)
	return send(c, errInternal())
}

func (g *Gateway) readyz(c *fiber.Ctx) error {
	if !g.cfg.Conn.IsConnected() {
		c.Set(fiber.HeaderRetryAfter, "1")
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "nats disconnected"})
	}
	if !g.cfg.ReadyWithoutWorkers && !g.ready() {
		c.Set(fiber.HeaderRetryAfter, "1")
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "no worker can serve"})
	}
	return c.JSON(fiber.Map{"status": "ready", "models": len(g.cfg.Directory.Models())})
}

func (g *Gateway) auth(c *fiber.Ctx) error {
	h := c.Get(fiber.HeaderAuthorization)
	if h == "" {
		return send(c, errMissingKey())
	}
	secret, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return send(c, errMissingKey())
	}
	rec, ok := g.cfg.Keys.Lookup(strings.TrimSpace(secret))
	if !ok {
		return send(c, errBadKey())
	}
	c.Locals(localKey, rec)
	return c.Next()
}

// keyOf is the API key auth put on the request.
func keyOf(c *fiber.Ctx) APIKey {
	k, _ := c.Locals(localKey).(APIKey)
	return k
}

// listModels lists the admitted models the key may use: others are not
// revealed.
func (g *Gateway) listModels(c *fiber.Ctx) error {
	key := keyOf(c)
	models := g.cfg.Directory.Models()
	// Models known without a live worker are listed too: a request for
	// one waits for a worker (coldstart.go).
	listed := make(map[string]bool, len(models))
	for _, m := range models {
		listed[m.ID] = true
	}
	for _, m := range g.cfg.Pending.KnownModels() {
		if !listed[m.ID] {
			models = append(models, m)
		}
	}
	sort.Slice(models, func(i, j int) bool { return models[i].ID < models[j].ID })
	data := make([]fiber.Map, 0, len(models))
	for _, m := range models {
		if key.MayUse(m.ID) {
			data = append(data, modelObject(m))
		}
	}
	return c.JSON(fiber.Map{"object": "list", "data": data})
}

func (g *Gateway) getModel(c *fiber.Ctx) error {
	id := c.Params("*")
	key := keyOf(c)
	m, ok := g.cfg.Directory.Model(id)
	if !ok {
		m, ok = g.cfg.Pending.Known(id)
	}
	if !ok || !key.MayUse(id) {
		return send(c, errModelNotFound(id))
	}
	return c.JSON(modelObject(m))
}

func modelObject(m wire.ModelInfo) fiber.Map {
	owned := m.OwnedBy
	if owned == "" {
		owned = "teegate"
	}
	return fiber.Map{"id": m.ID, "object": "model", "created": m.Created, "owned_by": owned}
}
