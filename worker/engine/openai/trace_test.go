package openai

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/teegate/teegate/worker/engine"
)

// The worker's engine span travels upstream as a W3C traceparent, so an
// engine that exports OpenTelemetry (vLLM, SGLang) joins the request's
// trace; without a span in the context no header is sent.
func TestTraceparentSentUpstream(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("traceparent")
		w.Write([]byte(`{}`))
	}))
	t.Cleanup(srv.Close)
	e := newTestEngine(t, Config{BaseURL: srv.URL})
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	for _, tc := range []struct {
		ctx  context.Context
		want string
	}{
		{trace.ContextWithSpanContext(context.Background(), sc), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{context.Background(), ""},
	} {
		if _, err := e.Do(tc.ctx, engine.Call{Op: engine.OpChatCompletions, Body: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		if h := <-got; h != tc.want {
			t.Errorf("traceparent = %q, want %q", h, tc.want)
		}
	}
}
