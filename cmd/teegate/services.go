package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/teegate/teegate/cmd/internal/cliutil"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/worker/wire"
)

func runGateway(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("gateway", stderr)
	var nf cliutil.NATSFlags
	nf.Register(fs)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	var obs cliutil.ObserveFlags
	obs.Register(fs, "json", false)
	metricsOn := fs.Bool("metrics", true, "serve Prometheus metrics at GET /metrics on the listen address")
	rpm := fs.Int64("rpm", 0, "requests per minute of API keys that set none, counted across replicas in NATS (0: unlimited)")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with this PEM certificate chain (with -tls-key)")
	tlsKey := fs.String("tls-key", "", "PEM private key of -tls-cert")
	name := fs.String("name", "", "this replica's name in audit records (default: the host name)")
	var af auditFlags
	af.register(fs)
	bodyLimit := fs.Int("body-limit", 4<<20, "largest request body in bytes")
	timeout := fs.Duration("request-timeout", 10*time.Minute, "deadline of one request")
	unattested := fs.Bool("allow-unattested", false, "relay answers without receipts (workers started with -tee none); otherwise such answers are refused")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := obs.Logger(stderr)
	if err != nil {
		return err
	}
	tp, stopTracing, err := obs.Tracer(ctx, "teegate-gateway")
	if err != nil {
		return err
	}
	defer func() { _ = stopTracing(context.Background()) }()
	var reg *prometheus.Registry
	if *metricsOn {
		reg = cliutil.NewRegistry()
	}
	if *rpm < 0 {
		return usageErrorf(fs, "-rpm must be >= 0")
	}
	tlsCfg, err := cliutil.ServerTLS(*tlsCert, *tlsKey)
	if err != nil {
		return err
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	nc, err := nf.Connect("teegate-gateway", log)
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("connecting to jetstream: %w", err)
	}
	defer nc.Close()
	keys, err := gateway.OpenKeys(ctx, js)
	if err != nil {
		return err
	}
	defer keys.Close()
	dir, err := gateway.OpenDirectory(ctx, js)
	if err != nil {
		return err
	}
	defer dir.Close()
	evidence, err := wire.EnsureBucket(ctx, js, wire.EvidenceConfig())
	if err != nil {
		return err
	}
	receipts, err := gateway.EnsureReceiptsBucket(ctx, js, wire.ReceiptsTTL)
	if err != nil {
		return err
	}
	limits, err := gateway.OpenLimits(ctx, js, af.replicas, nil)
	if err != nil {
		return err
	}
	alog, err := af.open(ctx, js, *name, log)
	if err != nil {
		return err
	}
	defer alog.Close()
	g, err := gateway.New(gateway.Config{Conn: nc, Keys: keys, Directory: dir, Logger: log,
		DefaultRPM: *rpm, Limits: limits, Audit: alog, BodyLimit: *bodyLimit, RequestTimeout: *timeout,
		Evidence: evidence, Receipts: receipts, Unattested: *unattested,
		Metrics: reg, Tracer: tp})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ln) }()
	log.Info("gateway listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return g.Shutdown(sctx)
}

func runWorker(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("worker", stderr)
	var nf cliutil.NATSFlags
	nf.Register(fs)
	var obs cliutil.ObserveFlags
	obs.Register(fs, "json", true)
	conc := fs.Int("max-concurrency", 64, "requests served at once")
	provider := fs.String("provider", "", "who operates this machine (stated in the evidence; the audit ledger sums usage by it)")
	tee := fs.String("tee", "simulated", "simulated (development only) or none; real TEEs: use the measured teegate-worker binary")
	dataDir := fs.String("data-dir", cliutil.DefaultDataDir(), "data directory (simulated TEE root)")
	id := fs.String("id", "", "worker id (default: random)")
	epoch := fs.Duration("epoch", time.Hour, "key epoch: how often the worker re-attests with fresh keys")
	simLabel := fs.String("sim-mrtd-label", "", "simulated TEE: report a different MRTD, SHA-384(\"teegate simulated mrtd \"+label), to try pinned-measurement policies")
	var ef cliutil.EngineFlags
	ef.Register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := obs.Logger(stderr)
	if err != nil {
		return err
	}
	opts := cliutil.WorkerOptions{Provider: *provider}
	switch *tee {
	case "simulated":
		if opts.Attester, _, err = sim.OpenAttester(*dataDir, sim.Config{GPUs: 1, Measurements: ptr(sim.MeasurementsLabeled(*simLabel))}); err != nil {
			return err
		}
	case "none":
	default:
		fmt.Fprintf(stderr, "unknown -tee %q\n", *tee)
		return errUsage
	}
	wcfg, stop, err := obs.Worker(ctx, "teegate-worker", log)
	if err != nil {
		return err
	}
	defer stop()
	wcfg.ID, wcfg.MaxConcurrency = *id, *conc
	opts.Epoch = *epoch
	return cliutil.RunWorker(ctx, nf, ef, wcfg, opts)
}
func ptr[T any](v T) *T { return &v }
