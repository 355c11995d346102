package worker

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names the worker registers (see deploy/grafana).
const (
	MetricRequests    = "teegate_worker_requests_total"
	MetricDuration    = "teegate_worker_request_duration_seconds"
	MetricReceiptSign = "teegate_worker_receipt_sign_seconds"
	MetricInflight    = "teegate_worker_inflight_requests"
	MetricQueueDepth  = "teegate_worker_queue_depth"
	MetricBusy        = "teegate_worker_busy_total"
	MetricAdmitted    = "teegate_worker_admitted"
)

// metrics are the worker's Prometheus collectors; nil records nothing.
// Label values are bounded: model is one of the worker's own models (else
// "other"), status an HTTP status.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	sign     *prometheus.HistogramVec
	busy     prometheus.Counter
}

var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

func newMetrics(reg prometheus.Registerer, w *Worker) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRequests,
			Help: "Requests the worker answered, by model and HTTP status (streams: the status they ended with)."},
			[]string{"model", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricDuration,
			Help: "Time from taking a request to its last reply, by model.", Buckets: latencyBuckets},
			[]string{"model"}),
		sign: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricReceiptSign,
			Help:    "Time to issue one receipt (hashing, signing, fresh-mode batching), by kind: response or stream.",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .05, .25, 1, 5}},
			[]string{"kind"}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricBusy,
			Help: "Requests turned away because the worker was at capacity (the gateway tries another)."}),
	}
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricInflight,
		Help: "Requests being served now."}, func() float64 { return float64(len(w.sem)) })
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricQueueDepth,
		Help: "Requests waiting for a free slot."}, func() float64 { return float64(w.waiting.Load()) })
	admitted := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricAdmitted,
		Help: "1 while the gateway's admission lets this worker serve, else 0."}, func() float64 {
		if w.Admission().Admitted {
			return 1
		}
		return 0
	})
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.sign, m.busy, inflight, queue, admitted} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// modelLabel bounds a model label to the worker's own models.
func (w *Worker) modelLabel(model string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.models {
		if m.ID == model {
			return model
		}
	}
	return "other"
}

func (m *metrics) served(model string, status int, start time.Time) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(model, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(model).Observe(time.Since(start).Seconds())
}

func (m *metrics) signed(kind string, start time.Time) {
	if m == nil {
		return
	}
	m.sign.WithLabelValues(kind).Observe(time.Since(start).Seconds())
}

func (m *metrics) turnedAway() {
	if m == nil {
		return
	}
	m.busy.Inc()
}
