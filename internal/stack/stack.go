package stack

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/gateway/admission"
	"github.com/teegate/teegate/gateway/audit"
	"github.com/teegate/teegate/internal/gatewaynode"
	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/internal/workernode"
	"github.com/teegate/teegate/policies"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine"
)

// Config describes a stack.
type Config struct {
	// DataDir holds JetStream state and the simulated TEE's root. Required.
	DataDir string
	// Addr is the gateway's listen address; default "127.0.0.1:0".
	Addr string
	// TLS, when set, makes the gateway serve HTTPS with it.
	TLS *tls.Config
	// NATSListen exposes the NATS server to other processes ("127.0.0.1:0"
	// for a random port); empty keeps it in-process only.
	NATSListen string
	// APIKey is ensured to exist (as a non-admin key) when set.
	APIKey string
	// Engines each get one worker. May be empty (a gateway with no workers).
	Engines []engine.Engine
	// Gateway and Worker settings; Conn/Keys/Directory/Engine are filled in.
	Gateway gateway.Config
	Worker  worker.Config
	// ColdStart tunes the gateway's cold-start queue (requests for a known
	// model wait there for a worker); NoColdStart runs without one.
	ColdStart   gateway.PendingConfig
	NoColdStart bool
	// TEE configures the simulated TEE each worker attests with.
	TEE TEEConfig
	// Policy decides which workers the gateway admits (DESIGN §3.5, §4): a
	// shipped policy name ("dev", "production") or the path of a .rego
	// file, which is watched and reloaded when it changes. Default "dev":
	// the simulated TEE passes it, production refuses it.
	Policy string
	// PolicyWatch is the watcher's poll interval for a policy file (0:
	// policies.DefaultWatchInterval).
	PolicyWatch time.Duration
	// Admission tunes the admission service (leases, grace, notice,
	// Verify.MaxAge); its connections, issuer, policy and verifiers are
	// filled in.
	Admission admission.Config
	// TrustedSimRoots are further simulated roots (DER) whose evidence
	// admission verifies. The stack's own root (the data directory's, which
	// `teegate worker` with the same data directory shares) is always
	// trusted; any other simulated root is refused, so no local process can
	// join with a simulated TEE of its own making.
	TrustedSimRoots [][]byte
	Logger          *slog.Logger
	// Metrics, when set, collects every component's Prometheus metrics
	// (gateway, admission, each worker under a "worker" label) and the
	// gateway serves it at /metrics. Tracer traces the gateway and the
	// workers. Either may be nil (off).
	Metrics *prometheus.Registry
	Tracer  trace.TracerProvider
	// Audit is the audit stream's retention and replication;
	// AuditCheckpointEvery how many records a checkpoint follows at most
	// (0: the audit package's default).
	Audit                audit.StreamConfig
	AuditCheckpointEvery int
}

// TEEConfig configures the workers' simulated TEE.
type TEEConfig struct {
	// Disabled runs workers without attestation (no receipts).
	Disabled bool
	// QuoteDelay is the simulated quote time (0: the simulator's default,
	// similar to a real TDX quote; negative: none).
	QuoteDelay time.Duration
	// GPUs is the number of simulated GPUs (default 1).
	GPUs int
	// Provider is the provider identity workers state in their evidence
	// (AddProviderWorker sets one per worker).
	Provider string
	// Epoch is the key epoch (0: the keeper's default).
	Epoch time.Duration
	// BatchWindow is the fresh-mode batching window (0: default).
	BatchWindow time.Duration
}

// Stack is a running product: the embedded server, one gateway node and
// worker nodes.
type Stack struct {
	URL     string // http://host:port of the gateway
	NATSURL string // empty when NATS is in-process only
	Server  *natsembed.Server
	JS      jetstream.JetStream
	Gateway *gateway.Gateway
	Workers []*worker.Worker
	Keys    *gateway.KVKeys
	Dir     *gateway.KVDirectory
	// Evidence is the evidence bucket; Keepers the workers' key keepers.
	Evidence jetstream.KeyValue
	Keepers  []*enclave.Keeper
	// SimRoot is the simulated TEE's root, kept in the data directory;
	// admission trusts it (and TrustedSimRoots) alone.
	SimRoot *sim.Root
	// Admission is the auth callout that admits workers by their evidence;
	// Policy holds the policy it applies (SetPolicy swaps it).
	Admission *admission.Service
	Policy    *policies.Holder
	// Limits are the shared per-key counters; Audit the audit log the
	// first gateway writes; AuditKey signs its checkpoints.
	Limits   *gateway.Limits
	Audit    *audit.Log
	AuditKey ed25519.PrivateKey
	// nodeCfg is the gateway node's config without its connections,
	// address and name: AddGateway's replicas are the same assembly.
	nodeCfg  gatewaynode.Config
	replicas []*Replica
	// Node is the gateway side; WorkerNodes the worker sides.
	Node *gatewaynode.Node

	tee     TEEConfig
	metrics *prometheus.Registry
	tracer  trace.TracerProvider
	dataDir string
	log     *slog.Logger

	mu          sync.Mutex // guards Workers, workerNodes, Keepers
	workerNodes []*workernode.Node
	conns       []*nats.Conn
	once        sync.Once
}

// Start starts everything and returns when the gateway accepts requests and
// every worker's models are visible to it.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("starting stack: DataDir is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Stack{tee: cfg.TEE, dataDir: cfg.DataDir, log: log, metrics: cfg.Metrics, tracer: cfg.Tracer}
	defer func() {
		if err != nil {
			s.Close(context.Background())
		}
	}()
	// The account key that signs admissions is born here and never stored:
	// a restarted stack judges every worker again.
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		return nil, fmt.Errorf("starting stack: creating the admission key: %w", err)
	}
	issuerPub, err := issuer.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("starting stack: %w", err)
	}
	s.Server, err = natsembed.Start(natsembed.Config{StoreDir: filepath.Join(cfg.DataDir, "nats"), Listen: cfg.NATSListen,
		Auth: &natsembed.Auth{CalloutIssuer: issuerPub}})
	if err != nil {
		return nil, err
	}
	s.NATSURL = s.Server.ClientURL()
	gwConn, err := s.connect("teegate-gateway")
	if err != nil {
		return nil, err
	}
	sys, err := s.Server.ConnectSystem("teegate-admission-sys")
	if err != nil {
		return nil, err
	}
	s.conns = append(s.conns, sys)
	root, err := s.simRoot()
	if err != nil {
		return nil, err
	}
	gcfg := cfg.Gateway
	gcfg.Unattested = cfg.TEE.Disabled
	if gcfg.Metrics == nil {
		gcfg.Metrics = cfg.Metrics
	}
	if gcfg.Tracer == nil {
		gcfg.Tracer = cfg.Tracer
	}
	acfg := cfg.Admission
	if acfg.Metrics == nil && cfg.Metrics != nil {
		acfg.Metrics = cfg.Metrics
	}
	if gcfg.Logger == nil {
		gcfg.Logger = log.With("component", "gateway")
	}
	s.nodeCfg = gatewaynode.Config{
		Issuer: issuer, Policy: cfg.Policy, PolicyWatch: cfg.PolicyWatch,
		// Simulated evidence verifies (its claims say simulated); the
		// policy decides whether that is acceptable.
		AllowSimulated: true, PinnedSimulatedRoots: append([][]byte{root.Cert.Raw}, cfg.TrustedSimRoots...), Admission: acfg, Gateway: gcfg, TLS: cfg.TLS, Logger: log,
		Audit: cfg.Audit, AuditCheckpointEvery: cfg.AuditCheckpointEvery, ColdStart: cfg.ColdStart, NoColdStart: cfg.NoColdStart,
	}
	ncfg := s.nodeCfg
	ncfg.Conn, ncfg.Sys, ncfg.Addr, ncfg.Name = gwConn, sys, cfg.Addr, "gateway-0"
	if s.Node, err = gatewaynode.Start(ctx, ncfg); err != nil {
		return nil, err
	}
	n := s.Node
	s.URL, s.JS, s.Gateway, s.Keys, s.Dir, s.Evidence = n.URL, n.JS, n.Gateway, n.Keys, n.Dir, n.Evidence
	s.Admission, s.Policy = n.Admission, n.Policy
	s.Limits, s.Audit, s.AuditKey = n.Limits, n.Audit, n.AuditKey
	if cfg.APIKey != "" {
		if err := s.AddKey(ctx, cfg.APIKey, gateway.APIKey{Name: "default", Tenant: "default"}); err != nil {
			return nil, err
		}
	}
	for i, eng := range cfg.Engines {
		if _, err := s.AddWorker(ctx, eng, cfg.Worker, fmt.Sprintf("teegate-worker-%d", i)); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Stack) connect(name string) (*nats.Conn, error) {
	nc, err := s.Server.Connect(name)
	if err != nil {
		return nil, err
	}
	s.conns = append(s.conns, nc)
	return nc, nil
}

// AddKey stores an API key and waits until the gateway sees it.
func (s *Stack) AddKey(ctx context.Context, secret string, rec gateway.APIKey) error {
	return s.Node.AddKey(ctx, secret, rec)
}

// AddWorker starts one more worker and returns once it knows its
// admission: admitted, when the gateway's directory lists its models;
// refused, at once (it serves nothing and keeps asking; see
// worker.Worker.Admission). With the simulated TEE the worker connects
// bare, by its evidence, as a worker in a real TEE does; without a TEE it
// gets a service connection (static credentials, nothing judged).
func (s *Stack) AddWorker(ctx context.Context, eng engine.Engine, wcfg worker.Config, name string) (*worker.Worker, error) {
	return s.AddProviderWorker(ctx, eng, wcfg, name, s.tee.Provider)
}

// AddProviderWorker is AddWorker for a worker whose evidence names
// provider as the party that operates it.
func (s *Stack) AddProviderWorker(ctx context.Context, eng engine.Engine, wcfg worker.Config, name, provider string) (*worker.Worker, error) {
	if wcfg.ID == "" {
		wcfg.ID = name
	}
	if wcfg.Logger == nil {
		wcfg.Logger = s.log.With("component", "worker")
	}
	if wcfg.Metrics == nil && s.metrics != nil {
		wcfg.Metrics = prometheus.WrapRegistererWith(prometheus.Labels{"worker": wcfg.ID}, s.metrics)
	}
	if wcfg.Tracer == nil {
		wcfg.Tracer = s.tracer
	}
	ncfg := workernode.Config{Engine: eng, Worker: wcfg, Provider: provider, Epoch: s.tee.Epoch, BatchWindow: s.tee.BatchWindow, Logger: wcfg.Logger}
	if s.tee.Disabled {
		nc, err := s.connect(name)
		if err != nil {
			return nil, err
		}
		ncfg.Conn = nc
	} else {
		att, err := s.attester()
		if err != nil {
			return nil, err
		}
		ncfg.Attester = att
		ncfg.Dial = func(opts ...nats.Option) (*nats.Conn, error) {
			return s.Server.ConnectBare(name, opts...)
		}
	}
	node, err := workernode.Start(ctx, ncfg)
	if err != nil {
		return nil, err
	}
	w := node.Worker
	s.mu.Lock()
	s.workerNodes = append(s.workerNodes, node)
	s.Workers = append(s.Workers, w)
	if node.Keeper != nil {
		s.Keepers = append(s.Keepers, node.Keeper)
	}
	s.mu.Unlock()
	if !w.Admission().Admitted {
		s.log.Warn("worker not admitted", "worker", w.ID(), "reasons", w.Admission().Reasons)
		return w, nil
	}
	models, err := eng.Models(ctx)
	if err != nil {
		return nil, fmt.Errorf("adding worker: %w", err)
	}
	for _, m := range models {
		if err := poll(ctx, func() bool { _, ok := s.Dir.Model(m.ID); return ok }); err != nil {
			return nil, fmt.Errorf("waiting for the gateway to see a model: %w", err)
		}
	}
	return w, nil
}

// attester returns a new simulated TEE over the stack's root.
func (s *Stack) attester() (enclave.Attester, error) {
	gpus := s.tee.GPUs
	if gpus == 0 {
		gpus = 1
	}
	root, err := s.simRoot()
	if err != nil {
		return nil, err
	}
	att, err := sim.NewAttester(sim.Config{Root: root, GPUs: gpus, QuoteDelay: s.tee.QuoteDelay})
	if err != nil {
		return nil, fmt.Errorf("starting simulated TEE: %w", err)
	}
	return att, nil
}

// simRoot loads (or, on first start, creates) the data directory's
// simulated root.
func (s *Stack) simRoot() (*sim.Root, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.SimRoot == nil {
		root, err := sim.LoadOrCreateRoot(filepath.Join(s.dataDir, sim.RootDir))
		if err != nil {
			return nil, fmt.Errorf("loading simulated root: %w", err)
		}
		s.SimRoot = root
	}
	return s.SimRoot, nil
}

// SetPolicy makes p the admission policy and judges every admitted worker
// again: those it no longer admits are told to drain (requests in flight
// finish) and are disconnected after the admission grace period.
func (s *Stack) SetPolicy(ctx context.Context, p *policies.Policy) error {
	return s.Node.SetPolicy(ctx, p)
}

// ReloadPolicy reloads the policy (the operator's SIGHUP): a policy file
// is read again, a shipped policy compiled again; workers are re-judged.
func (s *Stack) ReloadPolicy(ctx context.Context) error {
	return s.Node.ReloadPolicy(ctx)
}

// poll calls cond until it is true or ctx ends; it is how code here waits
// for asynchronous state, never with fixed sleeps.
func poll(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Close shuts everything down in order: gateway, workers, admission,
// connections, NATS.
func (s *Stack) Close(ctx context.Context) {
	s.once.Do(func() {
		if s.Node != nil {
			s.Node.Shutdown(ctx)
		}
		for _, r := range s.replicas {
			r.close(ctx)
		}
		s.mu.Lock()
		nodes := s.workerNodes
		s.mu.Unlock()
		for _, n := range nodes {
			_ = n.Close(ctx)
		}
		if s.Node != nil {
			s.Node.Close(ctx)
		}
		for _, nc := range s.conns {
			nc.Close()
		}
		if s.Server != nil {
			s.Server.Shutdown()
		}
	})
}
