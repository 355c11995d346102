package worker

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/wire"
)

// tracerName names the instrumentation scope of the worker's spans.
const tracerName = "github.com/teegate/teegate/worker"

// Span attributes: ids, model, operation, status; never content.
var (
	attrModel     = attribute.Key("teegate.model")
	attrOp        = attribute.Key("teegate.op")
	attrRequestID = attribute.Key("teegate.request_id")
	attrWorker    = attribute.Key("teegate.worker")
	attrStatus    = attribute.Key("teegate.status")
)

// startSpan starts the worker's span of one request as a child of the
// trace context the gateway sent in the NATS headers (W3C traceparent).
func (w *Worker) startSpan(h nats.Header, model string) trace.Span {
	ctx := propagation.TraceContext{}.Extract(context.Background(), wire.TraceHeaders(h))
	_, span := w.tracer.Start(ctx, "teegate.worker "+h.Get(wire.HdrOp), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attrModel.String(model), attrOp.String(h.Get(wire.HdrOp)),
			attrRequestID.String(h.Get(wire.HdrRequestID)), attrWorker.String(w.cfg.ID)))
	return span
}

// engineSpan starts the span of the engine call under the request's span
// (nil when tracing is off); the engine sees it in ctx.
func (w *Worker) engineSpan(ctx context.Context, op engine.Op) (context.Context, trace.Span) {
	if w.tracer == nil {
		return ctx, nil
	}
	return w.tracer.Start(ctx, "teegate.engine "+string(op), trace.WithSpanKind(trace.SpanKindClient))
}

func endEngineSpan(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.SetStatus(codes.Error, "engine call failed")
	}
	span.End()
}

func endSpan(span trace.Span, status int) {
	span.SetAttributes(attrStatus.Int(status))
	if status >= 500 {
		span.SetStatus(codes.Error, strconv.Itoa(status))
	}
	span.End()
}

// statusOf is the status a stream that ended with err is counted under.
func statusOf(err error) int {
	if e, ok := engine.AsError(err); ok {
		return e.Status
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	if errors.Is(err, context.Canceled) {
		return 499 // the client went away (nginx's "client closed request")
	}
	return http.StatusInternalServerError
}
