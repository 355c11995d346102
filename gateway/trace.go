package gateway

import (
	"context"
	"strconv"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/teegate/teegate/worker/wire"
)

// tracerName names the instrumentation scope of the gateway's spans.
const tracerName = "github.com/teegate/teegate/gateway"

// Span attributes. Spans carry ids, the model, the operation and the
// status: never request or response content.
var (
	attrModel     = attribute.Key("teegate.model")
	attrOp        = attribute.Key("teegate.op")
	attrRequestID = attribute.Key("teegate.request_id")
	attrStatus    = attribute.Key("http.response.status_code")
)

// propagator is the W3C trace context (traceparent, tracestate), read from
// the client's HTTP headers and written into the NATS headers of the
// request to the worker.
var propagator = propagation.TraceContext{}

func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer(tracerName)
}

// requestHeaders reads a fasthttp request's headers as a TextMapCarrier.
type requestHeaders struct{ c *fiber.Ctx }

func (r requestHeaders) Get(key string) string { return r.c.Get(key) }
func (r requestHeaders) Set(string, string)    {}
func (r requestHeaders) Keys() []string        { return []string{"traceparent", "tracestate"} }

// startSpan starts the gateway's server span of one request, continuing
// the client's trace when it sent a traceparent.
func (g *Gateway) startSpan(c *fiber.Ctx, op string) trace.Span {
	ctx := propagator.Extract(context.Background(), requestHeaders{c})
	reqID, _ := c.Locals(localReqID).(string)
	_, span := g.tracer.Start(ctx, "teegate.gateway "+op, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attrOp.String(op), attrRequestID.String(reqID)))
	return span
}

// injectTrace writes span's context into the NATS headers of the request
// to the worker, so the worker's spans join the same trace.
func injectTrace(span trace.Span, h nats.Header) {
	propagator.Inject(trace.ContextWithSpan(context.Background(), span), wire.TraceHeaders(h))
}

func endSpan(span trace.Span, status int) {
	span.SetAttributes(attrStatus.Int(status))
	if status >= 500 {
		span.SetStatus(codes.Error, strconv.Itoa(status))
	}
	span.End()
}
