package admission

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/teegate/teegate/attest"
)

// Metric names the admission service registers (see deploy/grafana).
const (
	MetricVerifications = "teegate_admission_verifications_total"
	MetricVerifySeconds = "teegate_admission_decision_seconds"
)

// metrics count admission decisions by result and by a stable reason code
// (never the reasons' free text, which names measurements and paths). Nil
// records nothing.
type metrics struct {
	decisions *prometheus.CounterVec
	seconds   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricVerifications,
			Help: "Worker evidence verifications and admission decisions, by result (admitted, quarantined, refused) and reason code (ok when admitted)."},
			[]string{"result", "reason"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricVerifySeconds,
			Help:    "Time to decide one worker connection or evidence submission (verification and policy).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}),
	}
	for _, c := range []prometheus.Collector{m.decisions, m.seconds} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Every reason starts at zero, so a dashboard sees the series before
	// the first failure.
	for _, r := range reasonCodes {
		m.decisions.WithLabelValues("refused", r.code)
	}
	return m, nil
}

// reasonCodes maps decision errors to bounded label values, most specific
// first (an evidence rejection wraps the attest error that caused it).
var reasonCodes = []struct {
	err  error
	code string
}{
	{attest.ErrSimulatedNotAllowed, "simulated_not_allowed"},
	{attest.ErrSimulatedRootUntrusted, "simulated_root_untrusted"},
	{attest.ErrBundleSignature, "bundle_signature"},
	{attest.ErrEvidenceExpired, "evidence_expired"},
	{attest.ErrBindingReportData, "binding"},
	{attest.ErrBindingGPUNonce, "binding"},
	{attest.ErrCPUEvidence, "cpu_evidence"},
	{attest.ErrGPUEvidence, "gpu_evidence"},
	{attest.ErrUnknownTEE, "unknown_tee"},
	{attest.ErrMalformed, "malformed"},
	{ErrCredentials, "credentials"},
	{ErrKeyProof, "key_proof"},
	{ErrKeyMismatch, "key_mismatch"},
	{ErrEvidenceMissing, "evidence_missing"},
	{ErrEvidenceCorrupt, "evidence_corrupt"},
	{ErrEvidenceRejected, "evidence_rejected"},
	{ErrIdentity, "identity"},
	{ErrPolicyDenied, "policy_denied"},
	{ErrPolicyFailed, "policy_failed"},
	{ErrExpiring, "expiring"},
}

// ReasonCode is the metric label value for a decision error: "ok" for
// nil, "other" for an error not in the table.
func ReasonCode(err error) string {
	if err == nil {
		return "ok"
	}
	for _, r := range reasonCodes {
		if errors.Is(err, r.err) {
			return r.code
		}
	}
	return "other"
}

// observe counts one verdict decided since start.
func (m *metrics) observe(v *verdict, start time.Time) {
	if m == nil {
		return
	}
	result := "admitted"
	switch {
	case v.err == nil:
	case refuses(v.err):
		result = "refused"
	default:
		result = "quarantined"
	}
	m.decisions.WithLabelValues(result, ReasonCode(v.err)).Inc()
	m.seconds.Observe(time.Since(start).Seconds())
}
