package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/teegate/teegate/cmd/internal/cliutil"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/worker/wire"
)

func connectNATS(url, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("connecting to jetstream: %w", err)
	}
	return nc, js, nil
}

func runGateway(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("gateway", stderr)
	var nf cliutil.NATSFlags
	nf.Register(fs)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	var obs cliutil.ObserveFlags
	obs.Register(fs, "json", false)
	metricsOn := fs.Bool("metrics", true, "serve Prometheus metrics at GET /metrics on the listen address")
	rl := fs.Float64("rate-limit", 0, "requests per second per API key (0: unlimited)")
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
	g, err := gateway.New(gateway.Config{Conn: nc, Keys: keys, Directory: dir, Logger: log,
		RateLimit: *rl, BodyLimit: *bodyLimit, RequestTimeout: *timeout,
		Evidence: evidence, Receipts: receipts, Unattested: *unattested,
		Metrics: reg, Tracer: tp})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
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
	tee := fs.String("tee", "simulated", "simulated (development only) or none; real TEEs: use the measured teegate-worker binary")
	dataDir := fs.String("data-dir", cliutil.DefaultDataDir(), "data directory (simulated TEE root)")
	var ef cliutil.EngineFlags
	ef.Register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := obs.Logger(stderr)
	if err != nil {
		return err
	}
	var opts cliutil.WorkerOptions
	switch *tee {
	case "simulated":
		root, err := sim.LoadOrCreateRoot(filepath.Join(*dataDir, "sim"))
		if err != nil {
			return fmt.Errorf("loading simulated root: %w", err)
		}
		if opts.Attester, err = sim.NewAttester(sim.Config{Root: root, GPUs: 1}); err != nil {
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
	wcfg.MaxConcurrency = *conc
	return cliutil.RunWorker(ctx, nf, ef, wcfg, opts)
}

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: teegate keys add|list|revoke [flags]")
		return errUsage
	}
	fs := newFlagSet("keys "+args[0], stderr)
	natsURL := fs.String("nats", nats.DefaultURL, "NATS server URL")
	name := fs.String("name", "", "key name (add)")
	tenant := fs.String("tenant", "default", "tenant (add)")
	admin := fs.Bool("admin", false, "admin key (add)")
	secret := fs.String("key", "", "the key secret (revoke; add: use this instead of generating one)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	nc, js, err := connectNATS(*natsURL, "teegate-keys")
	if err != nil {
		return err
	}
	defer nc.Close()
	kv, err := gateway.EnsureKeysBucket(ctx, js)
	if err != nil {
		return err
	}
	switch args[0] {
	case "add":
		s := *secret
		if s == "" {
			if s, err = gateway.NewSecret(); err != nil {
				return err
			}
		}
		if err := gateway.AddKey(ctx, kv, s, gateway.APIKey{Name: *name, Tenant: *tenant, Admin: *admin}); err != nil {
			return err
		}
		fmt.Fprintln(stdout, s)
		return nil
	case "revoke":
		if *secret == "" {
			fmt.Fprintln(stderr, "revoke needs -key")
			return errUsage
		}
		if err := kv.Delete(ctx, gateway.KeyID(*secret)); err != nil {
			return fmt.Errorf("revoking key: %w", err)
		}
		return nil
	case "list":
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			return fmt.Errorf("listing keys: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID (sha256 prefix)\tNAME\tTENANT\tADMIN")
		for k := range lister.Keys() {
			e, err := kv.Get(ctx, k)
			if err != nil {
				if errors.Is(err, jetstream.ErrKeyNotFound) {
					continue
				}
				return fmt.Errorf("reading key: %w", err)
			}
			var rec gateway.APIKey
			_ = json.Unmarshal(e.Value(), &rec)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", k[:12], rec.Name, rec.Tenant, rec.Admin)
		}
		return tw.Flush()
	}
	fmt.Fprintf(os.Stderr, "unknown keys subcommand %q\n", args[0])
	return errUsage
}
