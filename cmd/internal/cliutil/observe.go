package cliutil

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/teegate/teegate/worker"
)

// ObserveFlags are the logging, tracing and metrics flags every
// long-running command shares.
type ObserveFlags struct {
	LogLevel  string
	LogFormat string
	// OTLP is the OTLP/HTTP traces endpoint (http://host:4318, or a full
	// URL ending in /v1/traces); empty: no tracing.
	OTLP string
	// MetricsListen (workers only) is where GET /metrics is served; empty:
	// nowhere.
	MetricsListen string
}

// Register adds the flags; defaultFormat is "auto" for commands people run
// in a terminal, "json" for services. metricsListen adds --metrics-listen.
func (o *ObserveFlags) Register(fs *flag.FlagSet, defaultFormat string, metricsListen bool) {
	fs.StringVar(&o.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.LogFormat, "log-format", defaultFormat, "log format: text, json, or auto (text on a terminal, else json)")
	fs.StringVar(&o.OTLP, "otlp-endpoint", "", "send OpenTelemetry traces over OTLP/HTTP to this endpoint, e.g. http://127.0.0.1:4318 (default: off)")
	if metricsListen {
		fs.StringVar(&o.MetricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics (default: off)")
	}
}

// Logger builds the slog logger the flags ask for, writing to w.
func (o *ObserveFlags) Logger(w io.Writer) (*slog.Logger, error) {
	return NewLoggerFormat(w, o.LogLevel, o.LogFormat)
}

// NewLoggerFormat returns a logger at level in format: "json", "text", or
// "auto" (text when w is a terminal, so a person reads it and a banner is
// not buried under JSON; JSON otherwise, for log collectors).
func NewLoggerFormat(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("parsing log level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "json":
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "auto", "":
		if IsTerminal(w) {
			return slog.New(slog.NewTextHandler(w, opts)), nil
		}
	default:
		return nil, fmt.Errorf("--log-format: want text, json or auto, not %q", format)
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

// IsTerminal reports whether w is a character device (a terminal).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Tracer returns the tracer provider the flags ask for and its shutdown
// (which flushes spans); nil without --otlp-endpoint.
func (o *ObserveFlags) Tracer(ctx context.Context, service string) (trace.TracerProvider, func(context.Context) error, error) {
	if o.OTLP == "" {
		return nil, func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(o.OTLP))
	if err != nil {
		return nil, nil, fmt.Errorf("--otlp-endpoint: %w", err)
	}
	res := resource.NewSchemaless(semconv.ServiceName(service))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}

// NewRegistry returns a metrics registry with the Go runtime and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ServeMetrics serves reg at http://addr/metrics until the returned stop
// is called.
func ServeMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() { _ = srv.Close() }, nil
}

// Worker returns a worker config with the logger, tracer and metrics the
// flags ask for, and the func that stops them (flushing spans, closing the
// metrics listener).
func (o *ObserveFlags) Worker(ctx context.Context, service string, log *slog.Logger) (worker.Config, func(), error) {
	cfg := worker.Config{Logger: log}
	tp, stopTracing, err := o.Tracer(ctx, service)
	if err != nil {
		return cfg, nil, err
	}
	cfg.Tracer = tp
	stopMetrics := func() {}
	if o.MetricsListen != "" {
		reg := NewRegistry()
		if stopMetrics, err = ServeMetrics(o.MetricsListen, reg, log); err != nil {
			_ = stopTracing(context.Background())
			return cfg, nil, err
		}
		cfg.Metrics = reg
	}
	return cfg, func() {
		stopMetrics()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = stopTracing(sctx)
	}, nil
}
