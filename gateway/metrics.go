package gateway

import (
	"strconv"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"go.opentelemetry.io/otel/trace"

	"github.com/teegate/teegate/attest"
)

// Label values are bounded: a model label is a model the directory knows
// (else "other"), a tenant one of the first maxTenantLabels tenants seen
// (else "other"), a status an HTTP status code. Nothing a client sends
// becomes a label value unchecked, and no metric carries content.
const (
	otherLabel      = "other"
	maxTenantLabels = 256
	maxWorkerLabels = 256
)

// Metric names the gateway registers (the Grafana dashboard in deploy/
// queries them; a test checks that every name it uses exists).
const (
	MetricRequests      = "teegate_gateway_requests_total"
	MetricDuration      = "teegate_gateway_request_duration_seconds"
	MetricTTFT          = "teegate_gateway_time_to_first_token_seconds"
	MetricTokens        = "teegate_gateway_tokens_total"
	MetricInflight      = "teegate_gateway_inflight_requests"
	MetricFleetWorkers  = "teegate_fleet_workers"
	MetricEvidenceAge   = "teegate_fleet_evidence_age_seconds"
	MetricReceiptsStore = "teegate_gateway_receipts_stored_total"
	MetricRedispatched  = "teegate_gateway_redispatched_total"
	// MetricPending is the requests waiting in this gateway's cold-start
	// queue per model (coldstart.go); the fleet-wide count is the
	// per-model consumer's num_pending on the ticket stream.
	MetricPending = "teegate_pending_requests"
)

// metrics are the gateway's Prometheus collectors. A nil *metrics records
// nothing (metrics off).
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	ttft     *prometheus.HistogramVec
	tokens   *prometheus.CounterVec
	inflight *prometheus.GaugeVec
	stored   prometheus.Counter
	redisp   *prometheus.CounterVec
	tenants  boundedLabels
}

// latencyBuckets span a cached builtin answer (sub-millisecond) to a long
// generation (minutes).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

func newMetrics(reg prometheus.Registerer, g *Gateway) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRequests,
			Help: "OpenAI API requests answered, by operation, model (known models only, else other), tenant and HTTP status."},
			[]string{"op", "model", "tenant", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricDuration,
			Help: "Time from request arrival to the last byte (streams: to the end of the stream), by operation and model.", Buckets: latencyBuckets},
			[]string{"op", "model", "stream"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricTTFT,
			Help: "Streams: time from request arrival to the first chunk relayed, by model.", Buckets: latencyBuckets},
			[]string{"model"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricTokens,
			Help: "Tokens in (prompt) and out (completion) as the receipts state them, by model."},
			[]string{"model", "direction"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricInflight,
			Help: "Requests the gateway has accepted and not yet finished answering (the queue depth per model)."},
			[]string{"model"}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricReceiptsStore,
			Help: "Receipts written to the receipts bucket."}),
		redisp: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRedispatched,
			Help: "Requests sent to another worker before the first byte of an answer, by reason: busy (the worker said so), " +
				"gone (its subject had no subscriber), lost (its worker's connection went while holding it), no_accept (it never accepted)."},
			[]string{"reason"}),
		tenants: boundedLabels{max: maxTenantLabels},
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.ttft, m.tokens, m.inflight, m.stored, m.redisp, fleetCollector{g}, pendingCollector{g}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// boundedLabels admits the first max distinct values and maps every later
// one to "other".
type boundedLabels struct {
	max  int
	seen sync.Map // string → struct{}
	mu   sync.Mutex
	n    int
}

func (b *boundedLabels) value(v string) string {
	if v == "" {
		return "none"
	}
	if _, ok := b.seen.Load(v); ok {
		return v
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.seen.Load(v); ok {
		return v
	}
	if b.n >= b.max {
		return otherLabel
	}
	b.n++
	b.seen.Store(v, struct{}{})
	return v
}

// statusLabel avoids an allocation for the statuses the gateway answers.
func statusLabel(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 401:
		return "401"
	case 404:
		return "404"
	case 429:
		return "429"
	case 500:
		return "500"
	case 502:
		return "502"
	case 503:
		return "503"
	case 504:
		return "504"
	}
	return strconv.Itoa(code)
}

// reqObs is what the gateway observes of one inference request: its
// metric labels (model is "other" until the request is routed to a model
// the directory knows) and its span.
type reqObs struct {
	op, model, tenant string
	start             time.Time
	routed            bool // counted in the in-flight gauge
	stream            bool // a stream relay took over: it records the end
	span              trace.Span
}

// track starts observing an inference request; nil when metrics and
// tracing are both off, so the request path pays nothing for them.
func (g *Gateway) track(c *fiber.Ctx, op string) *reqObs {
	if g.metrics == nil && g.cfg.Tracer == nil {
		return nil
	}
	key, _ := c.Locals(localKey).(APIKey)
	o := &reqObs{op: op, model: otherLabel}
	if g.metrics != nil {
		o.tenant = g.metrics.tenants.value(key.Tenant)
	}
	o.start, _ = c.Locals(localStart).(time.Time)
	if g.cfg.Tracer != nil {
		o.span = g.startSpan(c, op)
	}
	c.Locals(localObs, o)
	return o
}

// routed marks o as routed to model and counts it in flight.
func (g *Gateway) routed(o *reqObs, model string) {
	if o == nil {
		return
	}
	o.model, o.routed = model, true
	if g.metrics != nil {
		g.metrics.inflight.WithLabelValues(model).Inc()
	}
	if o.span != nil {
		o.span.SetAttributes(attrModel.String(model))
	}
}

// done records an inference request when its handler returns (common);
// a stream's end is recorded by its relay (streamEnded).
func (g *Gateway) done(c *fiber.Ctx) {
	o, ok := c.Locals(localObs).(*reqObs)
	if !ok {
		return
	}
	status := c.Response().StatusCode()
	if m := g.metrics; m != nil {
		m.requests.WithLabelValues(o.op, o.model, o.tenant, statusLabel(status)).Inc()
		if !o.stream {
			m.duration.WithLabelValues(o.op, o.model, "false").Observe(time.Since(o.start).Seconds())
			if o.routed {
				m.inflight.WithLabelValues(o.model).Dec()
			}
		}
	}
	if o.span != nil && !o.stream {
		endSpan(o.span, status)
	}
}

// streamEnded records the end of a relayed stream.
func (g *Gateway) streamEnded(o *reqObs) {
	if o == nil {
		return
	}
	if m := g.metrics; m != nil {
		m.duration.WithLabelValues(o.op, o.model, "true").Observe(time.Since(o.start).Seconds())
		if o.routed {
			m.inflight.WithLabelValues(o.model).Dec()
		}
	}
	if o.span != nil {
		endSpan(o.span, 200)
	}
}

// firstToken records a stream's time to its first relayed chunk.
func (g *Gateway) firstToken(o *reqObs) {
	if g.metrics == nil || o == nil {
		return
	}
	g.metrics.ttft.WithLabelValues(o.model).Observe(time.Since(o.start).Seconds())
}

// usage counts a receipt's tokens. It runs in the receipt writer, off the
// request path.
func (m *metrics) usage(model string, u attest.Usage) {
	if m == nil {
		return
	}
	m.stored.Inc()
	if u.PromptTokens > 0 {
		m.tokens.WithLabelValues(model, "in").Add(float64(u.PromptTokens))
	}
	if u.CompletionTokens > 0 {
		m.tokens.WithLabelValues(model, "out").Add(float64(u.CompletionTokens))
	}
}

// fleetCollector reports the fleet as the admission service judged it, at
// scrape time: workers by decision, and each worker's evidence age.
type fleetCollector struct{ g *Gateway }

var (
	fleetWorkersDesc = prometheus.NewDesc(MetricFleetWorkers,
		"Workers known to the gateway, by admission decision (admitted, refused, unjudged).", []string{"decision"}, nil)
	evidenceAgeDesc = prometheus.NewDesc(MetricEvidenceAge,
		"Age of each judged worker's current evidence bundle.", []string{"worker"}, nil)
)

func (f fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- fleetWorkersDesc
	ch <- evidenceAgeDesc
}

func (f fleetCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{"admitted": 0, "refused": 0, "unjudged": 0}
	n := 0
	for _, ws := range f.g.workerStatuses() {
		counts[ws.Decision]++
		if ws.EvidenceAgeSeconds >= 0 && n < maxWorkerLabels {
			n++
			ch <- prometheus.MustNewConstMetric(evidenceAgeDesc, prometheus.GaugeValue, float64(ws.EvidenceAgeSeconds), ws.WorkerID)
		}
	}
	for d, c := range counts {
		ch <- prometheus.MustNewConstMetric(fleetWorkersDesc, prometheus.GaugeValue, float64(c), d)
	}
}

// metricsHandler serves the registry in the Prometheus text format.
func metricsHandler(gather prometheus.Gatherer) fiber.Handler {
	h := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(gather, promhttp.HandlerOpts{}))
	return func(c *fiber.Ctx) error {
		h(c.Context())
		return nil
	}
}

// redispatched counts a request sent to another worker (reason: busy,
// gone, lost, no_accept).
func (m *metrics) redispatched(reason string) {
	if m != nil {
		m.redisp.WithLabelValues(reason).Inc()
	}
}
