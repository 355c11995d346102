package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/teegate/teegate/cmd/internal/cliutil"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/gateway/admission"
	"github.com/teegate/teegate/internal/gatewaynode"
)

func runGateway(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("gateway", stderr)
	var nf, sysf cliutil.NATSFlags
	nf.Register(fs)
	sysf.RegisterAuth(fs, "nats-sys", "NATS_SYS")
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	var obs cliutil.ObserveFlags
	obs.Register(fs, "json", false)
	metricsOn := fs.Bool("metrics", true, "serve Prometheus metrics at GET /metrics on the listen address")
	rpm := fs.Int64("rpm", 0, "requests per minute of API keys that set none, counted across replicas in NATS (0: unlimited)")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with this PEM certificate chain (with -tls-key)")
	tlsKey := fs.String("tls-key", "", "PEM private key of -tls-cert")
	name := fs.String("name", "", "this replica's name in audit records and the policy bucket (default: the host name)")
	var af auditFlags
	af.register(fs)
	bodyLimit := fs.Int("body-limit", 4<<20, "largest request body in bytes")
	timeout := fs.Duration("request-timeout", 10*time.Minute, "deadline of one request")
	unattested := fs.Bool("allow-unattested", false, "relay answers without receipts (workers started with -tee none); otherwise such answers are refused")
	seed := fs.String("admission-seed", os.Getenv("TEEGATE_ADMISSION_SEED"), "file with the account nkey seed whose public key the servers' auth_callout names as issuer (teegate nats-config writes it); every replica holds the same one. Empty: no admission here, workers are not judged by this process (default $TEEGATE_ADMISSION_SEED)")
	policy := fs.String("policy", "production", "admission policy: production, dev, or a .rego file (watched; SIGHUP reloads); the fleet adopts the latest replica's")
	allowSim := fs.Bool("allow-simulated", false, "let simulated evidence verify (development clusters only; the policy still decides)")
	simRoot := fs.String("sim-root", "", "with -allow-simulated: the simulated root certificate (PEM) workers must chain to; others are refused")
	replicas := fs.Int("replicas", 1, "JetStream replicas of the buckets and streams this gateway creates (3 on a three-node cluster)")
	readyNoWorkers := fs.Bool("ready-without-workers", false, "GET /readyz says ready while NATS is connected even when no worker can serve: for fleets that scale workers from zero (KEDA), where the gateway must take requests to queue them; by default /readyz fails while no worker can serve")
	var capf cliutil.CapacityFlags
	capf.Register(fs, true)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := capf.Validate(); err != nil {
		return usageErrorf(fs, "%v", err)
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
	if *replicas < 1 || *replicas > 5 {
		return usageErrorf(fs, "-replicas must be 1 to 5")
	}
	tlsCfg, err := cliutil.ServerTLS(*tlsCert, *tlsKey)
	if err != nil {
		return err
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	var issuer nkeys.KeyPair
	if *seed != "" {
		if issuer, err = cliutil.ReadAccountSeed(*seed); err != nil {
			return err
		}
	}
	pinned, err := readSimRoots(flagPaths(*simRoot))
	if err != nil {
		return err
	}
	nc, err := nf.Connect("teegate-gateway", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	sys, err := connectSys(nf, sysf, log)
	if err != nil {
		return err
	}
	if sys != nil {
		defer sys.Close()
	}
	ac := af.streamConfig(*replicas)
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	gcfg := gateway.Config{Logger: log, DefaultRPM: *rpm, BodyLimit: *bodyLimit, RequestTimeout: *timeout,
		Unattested: *unattested, Metrics: reg, Tracer: tp, ReadyWithoutWorkers: *readyNoWorkers}
	cold := capf.Apply(&gcfg)
	n, err := gatewaynode.Start(startCtx, gatewaynode.Config{
		Conn: nc, Sys: sys, Issuer: issuer, Policy: *policy, AllowSimulated: *allowSim, PinnedSimulatedRoots: pinned,
		Gateway: gcfg, ColdStart: cold, NoColdStart: capf.NoColdStart,
		Admission: admission.Config{Metrics: reg},
		Addr:      *addr, TLS: tlsCfg, Replicas: *replicas, Audit: ac, AuditCheckpointEvery: af.every, Name: *name, Logger: log,
	})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n.Close(sctx)
	}()
	log.Info("gateway listening", "url", n.URL, "admission", issuer != nil, "replicas", *replicas)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			if n.Admission == nil {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			if err := n.ReloadPolicy(rctx); err != nil {
				log.Error("reloading the admission policy failed", "err", err)
			}
			cancel()
		}
	}
}

func runWorker(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("worker", stderr)
	var nf cliutil.NATSFlags
	nf.Register(fs)
	var obs cliutil.ObserveFlags
	obs.Register(fs, "json", true)
	conc := fs.Int("max-concurrency", 64, "requests served at once (advertised in the registry: the gateway sends no more)")
	maxQueue := fs.Int("max-queue", 0, "requests that may wait here for a slot (default 4 × -max-concurrency); more are answered busy, so the gateway tries another worker")
	queueWait := fs.Duration("queue-wait", 5*time.Second, "how long a request may wait here for a slot")
	provider := fs.String("provider", "", "who operates this machine (stated in the evidence; the audit ledger sums usage by it)")
	tee := fs.String("tee", "simulated", "simulated (development only) or none; real TEEs: use the measured teegate-worker binary")
	dataDir := fs.String("data-dir", cliutil.DefaultDataDir(), "data directory (simulated TEE root)")
	id := fs.String("id", "", "worker id (default: random)")
	epoch := fs.Duration("epoch", time.Hour, "key epoch: how often the worker re-attests with fresh keys")
	simLabel := fs.String("sim-mrtd-label", "", "simulated TEE: report a different MRTD, SHA-384(\"teegate simulated mrtd \"+label), to try pinned-measurement policies")
	var ef cliutil.EngineFlags
	ef.Register(fs)
	var df cliutil.DrainFlags
	df.Register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := obs.Logger(stderr)
	if err != nil {
		return err
	}
	opts := cliutil.WorkerOptions{Provider: *provider}
	if *conc < 1 || *maxQueue < 0 || *queueWait <= 0 {
		return usageErrorf(fs, "-max-concurrency must be positive, -max-queue >= 0 and -queue-wait positive")
	}
	switch *tee {
	case "simulated":
		// Said loudly: a simulated TEE proves nothing, and production
		// policies refuse it (its evidence and receipts say simulated).
		log.Warn("SIMULATED TEE: this worker's evidence is produced in software, for development only", "tee", "simulated", "data_dir", *dataDir)
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
	wcfg.ID, wcfg.MaxConcurrency, wcfg.MaxQueue, wcfg.QueueWait = *id, *conc, *maxQueue, *queueWait
	opts.Epoch, opts.DrainGrace, opts.IdleExit, opts.Log = *epoch, df.Grace, df.Idle, log
	return cliutil.RunWorker(ctx, nf, ef, wcfg, opts)
}
func ptr[T any](v T) *T { return &v }
