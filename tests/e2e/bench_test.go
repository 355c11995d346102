package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/teegate/teegate/internal/stack"

	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/builtin"
	"github.com/teegate/teegate/worker/wire"
)

const benchBody = `{"model":"teegate-builtin","messages":[{"role":"user","content":"Tell me about lighthouses."}],"max_tokens":16,"seed":1}`

// BenchmarkEngineDirect is the baseline: the builtin engine called in
// process, no NATS, no HTTP.
func BenchmarkEngineDirect(b *testing.B) {
	e := stacktest.Builtin(b, builtin.Config{})
	call := engine.Call{Op: engine.OpChatCompletions, Body: []byte(benchBody), RequestID: "req_bench"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Do(context.Background(), call); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWorkerOverNATS: request/reply to the worker over the embedded
// NATS, without the gateway.
func BenchmarkWorkerOverNATS(b *testing.B) {
	s := stacktest.Start(b)
	nc, err := s.Server.Connect("bench")
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	b.ReportAllocs()
	for b.Loop() {
		m := nats.NewMsg(wire.InferSubject("teegate-builtin"))
		m.Header.Set(wire.HdrVersion, wire.Version)
		m.Header.Set(wire.HdrOp, wire.OpChat)
		m.Data = []byte(benchBody)
		r, err := nc.RequestMsg(m, 10*time.Second)
		if err != nil || r.Header.Get(wire.HdrStatus) != "200" {
			b.Fatalf("%v %v", err, r)
		}
	}
}

// BenchmarkRoundTrip is one non-stream chat completion through the whole
// path: HTTP client → gateway → NATS → worker → builtin engine → back.
func BenchmarkRoundTrip(b *testing.B) {
	benchRoundTrip(b, stacktest.Start(b))
}

// BenchmarkRoundTripObserved is BenchmarkRoundTrip with Prometheus metrics
// on (gateway, admission, worker) and, in the second case, every request
// traced by the OpenTelemetry SDK (sampled, no exporter): what observing
// costs on the request path, as a ratio to BenchmarkRoundTrip of the same
// run.
func BenchmarkRoundTripObserved(b *testing.B) {
	b.Run("metrics", func(b *testing.B) {
		benchRoundTrip(b, stacktest.Start(b, withMetrics(prometheus.NewRegistry())))
	})
	b.Run("metrics+traces", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		benchRoundTrip(b, stacktest.Start(b, withMetrics(prometheus.NewRegistry()), func(c *stack.Config) { c.Tracer = tp }))
	})
}

func benchRoundTrip(b *testing.B, s *stack.Stack) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	url := s.URL + "/v1/chat/completions"
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("POST", url, strings.NewReader(benchBody))
		req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// BenchmarkRoundTripStream is one streamed chat completion (16 tokens)
// through the whole path.
func BenchmarkRoundTripStream(b *testing.B) {
	s := stacktest.Start(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	url := s.URL + "/v1/chat/completions"
	body := strings.Replace(benchBody, `"seed":1`, `"seed":1,"stream":true`, 1)
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
