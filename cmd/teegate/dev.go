package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/cmd/internal/cliutil"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine"
)

var signalContext = cliutil.SignalContext

// devConfig is everything `teegate dev` needs, from flags.
type devConfig struct {
	Addr       string
	DataDir    string
	APIKey     string
	NATSListen string
	Observe    cliutil.ObserveFlags
	RPM        int64
	TLSCert    string
	TLSKey     string
	BodyLimit  int
	Timeout    time.Duration
	Policy     string
	// SimRoots are further simulated roots to admit (PEM files): by
	// default only the data directory's own root is.
	SimRoots []string
	Engine   cliutil.EngineFlags
	// MaxConcurrency is the worker's: requests it serves at once.
	MaxConcurrency int
	// Workers is how many in-process workers start (0: none; requests
	// wait in the cold-start queue for a `teegate worker` to join).
	Workers  int
	Capacity cliutil.CapacityFlags
}

func (c *devConfig) Validate() error {
	if c.Addr == "" {
		return errors.New("-addr is required")
	}
	if c.DataDir == "" {
		return errors.New("-data-dir is required")
	}
	if c.BodyLimit <= 0 {
		return errors.New("-body-limit must be positive")
	}
	if c.Policy == "" {
		return errors.New("-policy is required")
	}
	if c.RPM < 0 {
		return errors.New("-rpm must be >= 0")
	}
	if c.MaxConcurrency <= 0 {
		return errors.New("-max-concurrency must be > 0")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("-tls-cert and -tls-key go together")
	}
	if c.Workers < 0 || c.Workers > 64 {
		return errors.New("-workers must be 0 to 64")
	}
	return c.Capacity.Validate()
}

// DevMaxConcurrency is teegate dev's default worker concurrency: enough
// for 500 concurrent streams on the builtin engine without one waiting
// long (tests/e2e TestDevConcurrentStreams).
const DevMaxConcurrency = 256

// configBucket keeps dev-mode settings, such as the generated API key, so a
// restart prints the same key.
const configBucket = "teegate_dev"

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg devConfig
	fs := newFlagSet("dev", stderr)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "gateway listen address")
	fs.StringVar(&cfg.DataDir, "data-dir", cliutil.DefaultDataDir(), "data directory (JetStream state, simulated TEE keys)")
	fs.StringVar(&cfg.APIKey, "api-key", "", "API key to accept (default: generated once, stored, and printed)")
	fs.StringVar(&cfg.NATSListen, "nats-listen", "127.0.0.1:0", "address where the embedded NATS server accepts other processes (port 0: random)")
	cfg.Observe.Register(fs, "auto", false)
	fs.Int64Var(&cfg.RPM, "rpm", 0, "requests per minute of API keys that set none, counted across replicas in NATS (0: unlimited)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "serve HTTPS with this PEM certificate chain (with -tls-key)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key of -tls-cert")
	fs.IntVar(&cfg.BodyLimit, "body-limit", 4<<20, "largest request body in bytes")
	fs.IntVar(&cfg.MaxConcurrency, "max-concurrency", DevMaxConcurrency, "requests the worker serves at once (the gateway never sends it more; the rest wait for a slot)")
	fs.DurationVar(&cfg.Timeout, "request-timeout", 10*time.Minute, "deadline of one request")
	fs.StringVar(&cfg.Policy, "policy", "dev", "admission policy: dev, production, or a .rego file (watched; SIGHUP reloads). production refuses the simulated worker")
	fs.Func("trust-sim-root", "also admit workers whose simulated TEE has this root (PEM file; repeatable). By default only the data directory's own root, which `teegate worker --data-dir` with the same directory shares, is admitted", func(v string) error {
		cfg.SimRoots = append(cfg.SimRoots, v)
		return nil
	})
	cfg.Engine.Register(fs)
	fs.IntVar(&cfg.Workers, "workers", 1, "in-process workers with the simulated TEE (0: none; requests wait for a `teegate worker` to join)")
	cfg.Capacity.Register(fs, false)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	log, err := cfg.Observe.Logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	tp, stopTracing, err := cfg.Observe.Tracer(ctx, "teegate-dev")
	if err != nil {
		return err
	}
	defer func() { _ = stopTracing(context.Background()) }()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	eng, err := cfg.Engine.Build()
	if err != nil {
		return err
	}
	engines := make([]engine.Engine, 0, cfg.Workers)
	for i := range cfg.Workers {
		e := eng
		if i > 0 {
			if e, err = cfg.Engine.Build(); err != nil {
				return err
			}
		}
		engines = append(engines, e)
	}
	models, err := eng.Models(ctx)
	if err != nil || len(models) == 0 {
		return fmt.Errorf("listing models: %w", err)
	}
	gcfg := gateway.Config{DefaultRPM: cfg.RPM, BodyLimit: cfg.BodyLimit, RequestTimeout: cfg.Timeout}
	cold := cfg.Capacity.Apply(&gcfg)
	// The engine's models exist with zero workers: their requests wait for
	// one (a worker started later with this data directory serves them).
	for _, m := range models {
		cold.Models = append(cold.Models, m.ID)
	}
	tlsCfg, err := cliutil.ServerTLS(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return err
	}
	simRoots, err := readSimRoots(cfg.SimRoots)
	if err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := stack.Start(startCtx, stack.Config{
		TrustedSimRoots: simRoots,
		TLS:             tlsCfg,
		DataDir:         cfg.DataDir,
		Addr:            cfg.Addr,
		NATSListen:      cfg.NATSListen,
		Engines:         engines,
		Gateway:         gcfg,
		ColdStart:       cold,
		NoColdStart:     cfg.Capacity.NoColdStart,
		Worker:          worker.Config{Logger: log.With("component", "worker"), MaxConcurrency: cfg.MaxConcurrency, ModelRefresh: cfg.Engine.ModelRefresh},
		Policy:          cfg.Policy,
		Logger:          log,
		Metrics:         cliutil.NewRegistry(),
		Tracer:          tp,
	})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st.Close(sctx)
	}()
	key, err := devKey(startCtx, st, cfg.APIKey)
	if err != nil {
		return err
	}
	printBanner(stdout, st, key, models[0].ID, filepath.Join(cfg.DataDir, "sim", sim.RootCertFile))
	if cfg.Workers == 0 {
		printJoin(stdout, st, cfg)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "teegate dev: shutting down")
			return nil
		case <-hup:
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := st.ReloadPolicy(rctx); err != nil {
				log.Error("reloading the admission policy failed", "err", err)
			} else {
				log.Info("admission policy reload requested")
			}
			cancel()
		}
	}
}

// flagPaths is the list of one path flag: none when it is empty.
func flagPaths(path string) []string {
	if path == "" {
		return nil
	}
	return []string{path}
}

// readSimRoots reads PEM certificates, each a simulated root to trust.
func readSimRoots(paths []string) ([][]byte, error) {
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading simulated root: %w", err)
		}
		n := 0
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				continue
			}
			if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
				return nil, fmt.Errorf("reading simulated root %s: %w", p, err)
			}
			out = append(out, blk.Bytes)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("reading simulated root %s: no PEM certificate", p)
		}
	}
	return out, nil
}

// devKey returns the key to print: the flag's, else the stored dev key,
// else a new one that is stored for next time.
func devKey(ctx context.Context, st *stack.Stack, flagKey string) (string, error) {
	key := flagKey
	if key == "" {
		kv, err := st.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: configBucket, Description: "teegate dev settings"})
		if err != nil {
			return "", fmt.Errorf("opening dev settings: %w", err)
		}
		if e, err := kv.Get(ctx, "api_key"); err == nil {
			key = string(e.Value())
		} else if errors.Is(err, jetstream.ErrKeyNotFound) {
			if key, err = gateway.NewSecret(); err != nil {
				return "", err
			}
			if _, err := kv.Put(ctx, "api_key", []byte(key)); err != nil {
				return "", fmt.Errorf("storing dev api key: %w", err)
			}
		} else {
			return "", fmt.Errorf("reading dev api key: %w", err)
		}
	}
	if err := st.AddKey(ctx, key, gateway.APIKey{Name: "dev", Tenant: "dev", Admin: true}); err != nil {
		return "", err
	}
	return key, nil
}

func printBanner(w io.Writer, st *stack.Stack, key, model, simRoot string) {
	pol := st.Policy.Policy()
	fmt.Fprintf(w, `teegate dev is running (simulated TEE: for development only)
  OpenAI base URL: %[1]s/v1
  API key:         %[2]s
  NATS:            %[3]s
  Model:           %[4]s
  Policy:          %[5]s (workers are admitted by their evidence)
  Auditor page:    %[1]s/ui/ (sign in with the API key above; it verifies receipts in your browser)
  Simulated root:  %[6]s (pin it: teegate verify ... --sim-root %[6]s)
`, st.URL, key, orNone(st.NATSURL), model, pol.Name()+"@"+pol.Hash()[:12], simRoot)
	if u, ok := st.Server.ServiceUser(); ok && st.NATSURL != "" {
		if su, err := url.Parse(st.NATSURL); err == nil {
			su.User = url.UserPassword(u.Name, u.Password)
			fmt.Fprintf(w, "  NATS services:   %s (teegate gateway, keys; workers connect to the URL above by their evidence)\n", su)
		}
	}
	for _, wk := range st.Workers {
		if a := wk.Admission(); !a.Admitted {
			fmt.Fprintf(w, "  Worker %s was REFUSED by the policy: %s\n", wk.ID(), strings.Join(a.Reasons, "; "))
		}
	}
	self, err := os.Executable()
	if err != nil {
		self = "teegate"
	}
	fmt.Fprintf(w, `
Try it:
  curl -s %[1]s/v1/chat/completions -H 'Authorization: Bearer %[2]s' -H 'Content-Type: application/json' -d '{"model":"%[3]s","messages":[{"role":"user","content":"Tell me about lighthouses."}]}'

Verify an answer offline (its receipt chains to the simulated TEE's evidence):
  printf '%%s' '{"model":"%[3]s","messages":[{"role":"user","content":"Hello"}]}' > req.json
  curl -s -D hdr.txt -o resp.json %[1]s/v1/chat/completions -H 'Authorization: Bearer %[2]s' -H 'Content-Type: application/json' --data-binary @req.json
  sed -n 's/^teegate-receipt: *//Ip' hdr.txt | tr -d '\r' > receipt.txt
  curl -s -o evidence.json %[1]s/v1/attestation/evidence/$(sed -n 's/^teegate-evidence-id: *//Ip' hdr.txt | tr -d '\r') -H 'Authorization: Bearer %[2]s'
  %[4]s verify response --sim-root %[5]s --request req.json --response resp.json --receipt receipt.txt --evidence evidence.json

Press Ctrl-C to stop.
`, st.URL, key, model, self, simRoot)
}

// printJoin tells how to start a worker for a dev stack with none.
func printJoin(w io.Writer, st *stack.Stack, cfg devConfig) {
	self, err := os.Executable()
	if err != nil {
		self = "teegate"
	}
	if st.NATSURL == "" {
		fmt.Fprintln(w, "No worker runs and NATS is in-process only (-nats-listen \"\"): requests wait, then get 503.")
		return
	}
	fmt.Fprintf(w, `No worker runs (-workers 0): requests wait up to %s for one, then get 503 with Retry-After.
Start a worker (simulated TEE, development only) that joins this stack:
  %s worker --nats %s --engine builtin --data-dir %s

`, cfg.Capacity.ColdStartTimeout, self, st.NATSURL, cfg.DataDir+modelFlag(cfg.Engine.Model))
}

func modelFlag(m string) string {
	if m == "" {
		return ""
	}
	return " --model " + m
}

func orNone(s string) string {
	if s == "" {
		return "(in-process only)"
	}
	return s
}
