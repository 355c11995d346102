package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	promodel "github.com/prometheus/common/model"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
)

func withMetrics(reg *prometheus.Registry) stacktest.Option {
	return func(c *stack.Config) { c.Metrics = reg }
}

// scrape reads GET /metrics with the Prometheus text parser.
func scrape(t *testing.T, base string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, body := mustSend(t, "GET", base+"/metrics", "", "")
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	p := expfmt.NewTextParser(promodel.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams, string(body)
}

// value sums the samples of family name whose labels include want (a
// histogram's sample count).
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	var sum float64
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

func TestMetricsMoveWithRequests(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := stacktest.Start(t, withMetrics(reg))
	const prompt = "Tell me about the metrics canary zebra-7731."
	chat := `{"model":"teegate-builtin","messages":[{"role":"user","content":"` + prompt + `"}],"max_tokens":8}`
	ok := map[string]string{"op": "chat.completions", "model": "teegate-builtin", "tenant": "default", "status": "200"}

	before, _ := scrape(t, s.URL)
	if resp, b := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, chat); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	stream := strings.Replace(chat, `"max_tokens":8`, `"max_tokens":8,"stream":true`, 1)
	if resp, b := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, stream); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	// An unknown model is a 404 labelled "other": client input never
	// becomes a label value.
	if resp, _ := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, strings.Replace(chat, "teegate-builtin", "no-such-model-zebra", 1)); resp.StatusCode != 404 {
		t.Fatalf("unknown model: %d", resp.StatusCode)
	}
	// Tokens are counted off the request path, when the receipt is stored.
	var after map[string]*dto.MetricFamily
	var text string
	stacktest.Eventually(t, 30*time.Second, func() bool {
		after, text = scrape(t, s.URL)
		return value(after, "teegate_gateway_tokens_total", map[string]string{"direction": "out"}) > 0 &&
			value(after, "teegate_gateway_receipts_stored_total", nil) >= 2
	}, "token counts from receipts")

	if d := value(after, "teegate_gateway_requests_total", ok) - value(before, "teegate_gateway_requests_total", ok); d != 2 {
		t.Errorf("requests_total{200} moved by %v, want 2\n%s", d, text)
	}
	if v := value(after, "teegate_gateway_requests_total", map[string]string{"model": "other", "status": "404"}); v != 1 {
		t.Errorf("requests_total{other,404} = %v, want 1", v)
	}
	checks := []struct {
		name   string
		labels map[string]string
	}{
		{"teegate_gateway_request_duration_seconds", map[string]string{"model": "teegate-builtin", "stream": "false"}},
		{"teegate_gateway_request_duration_seconds", map[string]string{"model": "teegate-builtin", "stream": "true"}},
		{"teegate_gateway_time_to_first_token_seconds", map[string]string{"model": "teegate-builtin"}},
		{"teegate_gateway_tokens_total", map[string]string{"direction": "in"}},
		{"teegate_worker_requests_total", map[string]string{"model": "teegate-builtin", "status": "200", "worker": "teegate-worker-0"}},
		{"teegate_worker_request_duration_seconds", map[string]string{"model": "teegate-builtin"}},
		{"teegate_worker_receipt_sign_seconds", map[string]string{"kind": "response"}},
		{"teegate_worker_receipt_sign_seconds", map[string]string{"kind": "stream"}},
		{"teegate_worker_admitted", map[string]string{"worker": "teegate-worker-0"}},
		{"teegate_admission_verifications_total", map[string]string{"result": "admitted", "reason": "ok"}},
		{"teegate_fleet_workers", map[string]string{"decision": "admitted"}},
		{"teegate_fleet_evidence_age_seconds", map[string]string{"worker": "teegate-worker-0"}},
	}
	for _, c := range checks {
		if v := value(after, c.name, c.labels); v <= 0 && !(c.name == "teegate_fleet_evidence_age_seconds" && after[c.name] != nil) {
			t.Errorf("%s%v = %v, want > 0", c.name, c.labels, v)
		}
	}
	if v := value(after, "teegate_gateway_inflight_requests", map[string]string{"model": "teegate-builtin"}); v != 0 {
		t.Errorf("in flight after the requests finished: %v", v)
	}
	// Refusal reasons exist from the start, at zero.
	if after["teegate_admission_verifications_total"] == nil ||
		!strings.Contains(text, `teegate_admission_verifications_total{reason="simulated_not_allowed",result="refused"} 0`) {
		t.Error("refusal reason series missing")
	}
	for _, leak := range []string{"zebra-7731", "no-such-model-zebra", "lighthouses", stacktest.APIKey} {
		if strings.Contains(text, leak) {
			t.Errorf("/metrics contains %q", leak)
		}
	}
}

func TestTraceSpansOneTraceAcrossGatewayAndWorker(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	s := stacktest.Start(t, func(c *stack.Config) { c.Tracer = tp })

	// The client's own trace: the gateway continues it.
	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	tp0 := "00-" + clientTrace + "-00f067aa0ba902b7-01"
	for _, body := range []string{
		`{"model":"teegate-builtin","messages":[{"role":"user","content":"Hello"}],"max_tokens":4}`,
		`{"model":"teegate-builtin","messages":[{"role":"user","content":"Hello"}],"max_tokens":4,"stream":true}`,
	} {
		exp.Reset()
		resp, b := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, body, "traceparent", tp0)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		reqID := resp.Header.Get("x-request-id")
		var gw, wk, eng *tracetest.SpanStub
		stacktest.Eventually(t, 30*time.Second, func() bool {
			gw, wk, eng = nil, nil, nil
			spans := exp.GetSpans()
			for i := range spans {
				sp := &spans[i]
				switch sp.Name {
				case "teegate.gateway chat.completions":
					gw = sp
				case "teegate.worker chat.completions":
					wk = sp
				case "teegate.engine chat.completions":
					eng = sp
				}
			}
			return gw != nil && wk != nil && eng != nil
		}, "gateway, worker and engine spans")
		for _, sp := range []*tracetest.SpanStub{gw, wk, eng} {
			if got := sp.SpanContext.TraceID().String(); got != clientTrace {
				t.Errorf("%s: trace id %s, want the client's %s", sp.Name, got, clientTrace)
			}
		}
		if wk.Parent.SpanID() != gw.SpanContext.SpanID() || eng.Parent.SpanID() != wk.SpanContext.SpanID() {
			t.Errorf("parents: worker's %s (gateway %s), engine's %s (worker %s)",
				wk.Parent.SpanID(), gw.SpanContext.SpanID(), eng.Parent.SpanID(), wk.SpanContext.SpanID())
		}
		if gw.SpanKind != trace.SpanKindServer {
			t.Errorf("gateway span kind %v", gw.SpanKind)
		}
		found := false
		for _, a := range wk.Attributes {
			if string(a.Key) == "teegate.request_id" && a.Value.AsString() == reqID {
				found = true
			}
			if strings.Contains(a.Value.Emit(), "Hello") {
				t.Errorf("span attribute %s carries content", a.Key)
			}
		}
		if !found {
			t.Errorf("worker span lacks request id %s: %v", reqID, wk.Attributes)
		}
	}
}
