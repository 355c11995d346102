package stack

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/verifiers"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/gateway/admission"
	"github.com/teegate/teegate/gateway/audit"
	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/policies"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/wire"
)

// Config describes a stack.
type Config struct {
	// DataDir holds JetStream state (and, later, simulated-TEE keys). Required.
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

// Stack is a running product.
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
	// SimRoot is the simulated TEE's root, kept in the data directory; admission trusts it (and TrustedSimRoots) alone.
	SimRoot *sim.Root
	// Admission is the auth callout that admits workers by their evidence;
	// Policy holds the policy it applies (SetPolicy swaps it).
	Admission *admission.Service
	Policy    *policies.Holder
	// Limits are the shared per-key counters; Audit the audit log the
	// first gateway writes; AuditKey signs its checkpoints.
	Limits    *gateway.Limits
	Audit     *audit.Log
	AuditKey  ed25519.PrivateKey
	gwcfg     gateway.Config
	replicas  []*replica
	logged    sync.Map // evidence ids whose bundle the audit log carries
	watcher   *policies.Watcher
	policyArg string

	tee     TEEConfig
	metrics *prometheus.Registry
	tracer  trace.TracerProvider
	dataDir string
	log     *slog.Logger
	bg      sync.WaitGroup
	cancel  []context.CancelFunc

	mu      sync.Mutex // guards Workers
	conns   []*nats.Conn
	serveWG sync.WaitGroup
	once    sync.Once
}

// Start starts everything and returns when the gateway accepts requests and
// every worker's models are visible to it.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("starting stack: DataDir is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Stack{}
	defer func() {
		if err != nil {
			s.Close(context.Background())
		}
	}()
	if cfg.Policy == "" {
		cfg.Policy = "dev"
	}
	pol, err := policies.Resolve(cfg.Policy)
	if err != nil {
		return nil, fmt.Errorf("starting stack: %w", err)
	}
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
	s.JS, err = jetstream.New(gwConn)
	if err != nil {
		return nil, fmt.Errorf("starting stack: %w", err)
	}
	if s.Keys, err = gateway.OpenKeys(ctx, s.JS); err != nil {
		return nil, err
	}
	if cfg.APIKey != "" {
		if err := s.AddKey(ctx, cfg.APIKey, gateway.APIKey{Name: "default", Tenant: "default"}); err != nil {
			return nil, err
		}
	}
	if s.Dir, err = gateway.OpenDirectory(ctx, s.JS); err != nil {
		return nil, err
	}
	if s.Limits, err = gateway.OpenLimits(ctx, s.JS, cfg.Audit.Replicas, cfg.Gateway.Now); err != nil {
		return nil, err
	}
	if s.AuditKey, err = audit.LoadOrCreateKey(ctx, s.JS, cfg.Audit.Replicas); err != nil {
		return nil, err
	}
	if s.Audit, err = audit.Open(ctx, audit.Config{JS: s.JS, Stream: cfg.Audit, Gateway: "gateway-0", Key: s.AuditKey,
		CheckpointEvery: cfg.AuditCheckpointEvery, Logger: log.With("component", "audit")}); err != nil {
		return nil, err
	}
	if s.Evidence, err = wire.EnsureBucket(ctx, s.JS, wire.EvidenceConfig()); err != nil {
		return nil, err
	}
	receipts, err := gateway.EnsureReceiptsBucket(ctx, s.JS, wire.ReceiptsTTL)
	if err != nil {
		return nil, err
	}
	s.tee = cfg.TEE
	s.metrics, s.tracer = cfg.Metrics, cfg.Tracer
	s.dataDir = cfg.DataDir
	s.log = log
	if err := s.startAdmission(ctx, cfg, issuer, pol); err != nil {
		return nil, err
	}
	for i, eng := range cfg.Engines {
		if _, err := s.AddWorker(ctx, eng, cfg.Worker, fmt.Sprintf("teegate-worker-%d", i)); err != nil {
			return nil, err
		}
	}
	gcfg := cfg.Gateway
	gcfg.Evidence, gcfg.Receipts = s.Evidence, receipts
	gcfg.Admission = s.Admission
	gcfg.Unattested = cfg.TEE.Disabled
	if gcfg.AuditState == nil {
		// The chain as the audit stream holds it, checkpoints checked
		// against this stack's audit key.
		js, pub := s.JS, s.AuditKey.Public().(ed25519.PublicKey)
		gcfg.AuditState = func(ctx context.Context) (any, error) { return audit.ReadState(ctx, js, pub) }
	}
	if gcfg.Metrics == nil {
		gcfg.Metrics = cfg.Metrics
	}
	if gcfg.Tracer == nil {
		gcfg.Tracer = cfg.Tracer
	}
	if gcfg.Logger == nil {
		gcfg.Logger = log.With("component", "gateway")
	}
	s.gwcfg = gcfg
	gcfg.Conn, gcfg.Keys, gcfg.Directory = gwConn, s.Keys, s.Dir
	gcfg.Limits, gcfg.Audit = s.Limits, s.Audit
	s.Gateway, err = gateway.New(gcfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("starting stack: listening: %w", err)
	}
	s.URL = "http://" + ln.Addr().String()
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
		s.URL = "https://" + ln.Addr().String()
	}
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		if err := s.Gateway.Serve(ln); err != nil {
			log.Error("gateway stopped", "err", err)
		}
	}()
	if err := s.waitReady(ctx); err != nil {
		return nil, err
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
	kv, err := gateway.EnsureKeysBucket(ctx, s.JS)
	if err != nil {
		return err
	}
	if err := gateway.AddKey(ctx, kv, secret, rec); err != nil {
		return err
	}
	return s.Keys.WaitFor(ctx, secret)
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
	wcfg.Engine = eng
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
	var wref atomic.Pointer[worker.Worker]
	if s.tee.Disabled {
		nc, err := s.connect(name)
		if err != nil {
			return nil, err
		}
		wcfg.Conn = nc
	} else {
		keeper, err := s.attest(ctx, attest.WorkerIdentity{ID: wcfg.ID, Provider: provider}, eng, func(e *enclave.Epoch) {
			if w := wref.Load(); w != nil {
				w.EpochRotated(e)
			}
		})
		if err != nil {
			return nil, err
		}
		wcfg.Keeper, wcfg.TEE = keeper, "simulated"
		wcfg.Dial = func(opts ...nats.Option) (*nats.Conn, error) {
			return s.Server.ConnectBare(name, opts...)
		}
	}
	w, err := worker.New(wcfg)
	if err != nil {
		return nil, err
	}
	wref.Store(w)
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.Workers = append(s.Workers, w)
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

// attest gives a worker a simulated TEE and a key keeper rotating epochs
// in the background; onRotate hears of each new epoch after the first.
func (s *Stack) attest(ctx context.Context, ident attest.WorkerIdentity, eng engine.Engine, onRotate func(*enclave.Epoch)) (*enclave.Keeper, error) {
	root, err := s.simRoot()
	if err != nil {
		return nil, err
	}
	gpus := s.tee.GPUs
	if gpus == 0 {
		gpus = 1
	}
	att, err := sim.NewAttester(sim.Config{Root: root, GPUs: gpus, QuoteDelay: s.tee.QuoteDelay})
	if err != nil {
		return nil, fmt.Errorf("starting simulated TEE: %w", err)
	}
	models, err := eng.Models(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing models: %w", err)
	}
	ident.Models = make([]string, len(models))
	for i, m := range models {
		ident.Models[i] = m.ID
	}
	keeper, err := enclave.NewKeeper(ctx, enclave.KeeperConfig{
		Attester: att,
		Identity: ident,
		Epoch:    s.tee.Epoch,
		Batch:    enclave.BatchConfig{Window: s.tee.BatchWindow},
		OnRotate: onRotate,
		OnError:  func(err error) { s.log.Error("key rotation failed", "err", err) },
	})
	if err != nil {
		return nil, fmt.Errorf("attesting worker: %w", err)
	}
	s.Keepers = append(s.Keepers, keeper)
	rctx, cancel := context.WithCancel(context.Background())
	s.cancel = append(s.cancel, cancel)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		_ = keeper.Run(rctx)
	}()
	return keeper, nil
}

// simRoot loads (or, on first start, creates) the data directory's
// simulated root.
func (s *Stack) simRoot() (*sim.Root, error) {
	if s.SimRoot == nil {
		root, err := sim.LoadOrCreateRoot(filepath.Join(s.dataDir, "sim"))
		if err != nil {
			return nil, fmt.Errorf("loading simulated root: %w", err)
		}
		s.SimRoot = root
	}
	return s.SimRoot, nil
}

// startAdmission starts the auth callout with the policy, and the policy
// file's watcher when the policy is a file.
func (s *Stack) startAdmission(ctx context.Context, cfg Config, issuer nkeys.KeyPair, pol *policies.Policy) error {
	conn, err := s.connect("teegate-admission")
	if err != nil {
		return err
	}
	sys, err := s.Server.ConnectSystem("teegate-admission-sys")
	if err != nil {
		return err
	}
	s.conns = append(s.conns, sys)
	s.Policy = policies.NewHolder(pol)
	s.policyArg = cfg.Policy
	acfg := cfg.Admission
	acfg.Conn, acfg.Sys, acfg.Issuer = conn, sys, issuer
	if acfg.ReplyExpires == 0 && cfg.Gateway.RequestTimeout > 0 {
		// A worker may answer a request for as long as the gateway waits.
		acfg.ReplyExpires = cfg.Gateway.RequestTimeout + time.Minute
	}
	acfg.Policy = admission.Holder(s.Policy)
	if acfg.Verify.CPU == nil {
		// Simulated evidence of the stack's own root (and of roots the
		// operator added) verifies, its claims saying simulated; the policy
		// decides whether that is acceptable. Other simulated roots fail.
		root, err := s.simRoot()
		if err != nil {
			return err
		}
		pinned := append([][]byte{root.Cert.Raw}, cfg.TrustedSimRoots...)
		acfg.Verify = verifiers.Options(verifiers.Config{AllowSimulated: true, PinnedSimulatedRoots: pinned, MaxAge: acfg.Verify.MaxAge})
	}
	if acfg.Logger == nil {
		acfg.Logger = s.log.With("component", "admission")
	}
	if acfg.Metrics == nil && cfg.Metrics != nil {
		acfg.Metrics = cfg.Metrics
	}
	if s.Audit != nil {
		acfg.OnDecision = s.auditDecision
		acfg.OnEvict = func(evidenceID, why string) {
			s.Audit.Append(audit.Entry{Kind: audit.KindEviction, EvidenceID: evidenceID, Reasons: []string{why}})
		}
	}
	if s.Admission, err = admission.New(acfg); err != nil {
		return fmt.Errorf("starting admission: %w", err)
	}
	if err := s.Admission.Start(ctx); err != nil {
		s.Admission = nil
		return err
	}
	s.log.Info("admission policy", "policy", pol.Name(), "hash", pol.Hash())
	if policies.IsBuiltin(cfg.Policy) {
		return nil
	}
	s.watcher = &policies.Watcher{Interval: cfg.PolicyWatch}
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = append(s.cancel, cancel)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		_ = s.watcher.Watch(wctx, cfg.Policy, func(p *policies.Policy, err error) {
			if err != nil {
				s.log.Error("reloading the admission policy failed; keeping the previous one", "err", err)
				return
			}
			rctx, cancel := context.WithTimeout(wctx, 30*time.Second)
			defer cancel()
			if err := s.SetPolicy(rctx, p); err != nil {
				s.log.Error("re-judging workers after a policy reload", "err", err)
			}
		})
	}()
	return nil
}

// SetPolicy makes p the admission policy and judges every admitted worker
// again: those it no longer admits are told to drain (requests in flight
// finish) and are disconnected after the admission grace period.
func (s *Stack) SetPolicy(ctx context.Context, p *policies.Policy) error {
	if p == nil {
		return errors.New("setting admission policy: nil policy")
	}
	prev := s.Policy.Set(p)
	if prev == nil || prev.Hash() != p.Hash() {
		s.log.Info("admission policy changed", "policy", p.Name(), "hash", p.Hash())
	}
	if err := s.Admission.Recheck(ctx); err != nil {
		return fmt.Errorf("setting admission policy: %w", err)
	}
	return nil
}

// ReloadPolicy reloads the policy (the operator's SIGHUP): a policy file
// is read again, a shipped policy compiled again; workers are re-judged.
func (s *Stack) ReloadPolicy(ctx context.Context) error {
	if s.watcher != nil {
		s.watcher.Reload()
		return nil
	}
	p, err := policies.Resolve(s.policyArg)
	if err != nil {
		return fmt.Errorf("reloading admission policy: %w", err)
	}
	return s.SetPolicy(ctx, p)
}

func (s *Stack) waitReady(ctx context.Context) error {
	// The probe asks this process's own listener whether it is up; it
	// does not judge the certificate (clients do).
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	return poll(ctx, func() bool {
		resp, err := client.Get(s.URL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
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

// Close shuts everything down in order: gateway, workers, connections, NATS.
func (s *Stack) Close(ctx context.Context) {
	s.once.Do(func() {
		if s.Gateway != nil {
			_ = s.Gateway.Shutdown(ctx)
			s.serveWG.Wait()
		}
		for _, r := range s.replicas {
			r.close(ctx)
		}
		s.mu.Lock()
		workers := s.Workers
		s.mu.Unlock()
		for _, w := range workers {
			_ = w.Stop(ctx)
		}
		for _, c := range s.cancel {
			c()
		}
		s.bg.Wait()
		if s.Admission != nil {
			s.Admission.Stop()
		}
		if s.Audit != nil {
			s.Audit.Close()
		}
		for _, k := range s.Keepers {
			k.Close()
		}
		if s.Dir != nil {
			s.Dir.Close()
		}
		if s.Keys != nil {
			s.Keys.Close()
		}
		for _, nc := range s.conns {
			nc.Close()
		}
		if s.Server != nil {
			s.Server.Shutdown()
		}
	})
}
