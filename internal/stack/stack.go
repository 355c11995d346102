package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine"
)

// Config describes a stack.
type Config struct {
	// DataDir holds JetStream state (and, later, simulated-TEE keys). Required.
	DataDir string
	// Addr is the gateway's listen address; default "127.0.0.1:0".
	Addr string
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
	TEE    TEEConfig
	Logger *slog.Logger
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
	// SimRoot is the simulated TEE's root (nil when the TEE is disabled).
	SimRoot *sim.Root

	tee     TEEConfig
	dataDir string
	log     *slog.Logger
	bg      sync.WaitGroup
	cancel  []context.CancelFunc

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
	s.Server, err = natsembed.Start(natsembed.Config{StoreDir: filepath.Join(cfg.DataDir, "nats"), Listen: cfg.NATSListen})
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
	if s.Evidence, err = worker.EnsureEvidenceBucket(ctx, s.JS); err != nil {
		return nil, err
	}
	receipts, err := gateway.EnsureReceiptsBucket(ctx, s.JS, 30*24*time.Hour)
	if err != nil {
		return nil, err
	}
	s.tee = cfg.TEE
	s.dataDir = cfg.DataDir
	s.log = log
	for i, eng := range cfg.Engines {
		if _, err := s.AddWorker(ctx, eng, cfg.Worker, fmt.Sprintf("teegate-worker-%d", i)); err != nil {
			return nil, err
		}
	}
	gcfg := cfg.Gateway
	gcfg.Conn, gcfg.Keys, gcfg.Directory = gwConn, s.Keys, s.Dir
	gcfg.Evidence, gcfg.Receipts = s.Evidence, receipts
	if gcfg.Logger == nil {
		gcfg.Logger = log.With("component", "gateway")
	}
	s.Gateway, err = gateway.New(gcfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("starting stack: listening: %w", err)
	}
	s.URL = "http://" + ln.Addr().String()
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

// AddWorker starts one more worker on its own connection and waits until the
// gateway's directory lists its models.
func (s *Stack) AddWorker(ctx context.Context, eng engine.Engine, wcfg worker.Config, name string) (*worker.Worker, error) {
	nc, err := s.connect(name)
	if err != nil {
		return nil, err
	}
	wcfg.Conn, wcfg.Engine = nc, eng
	if wcfg.ID == "" {
		wcfg.ID = name
	}
	if !s.tee.Disabled {
		n, err := s.attest(ctx, wcfg.ID, eng)
		if err != nil {
			return nil, err
		}
		wcfg.Notary, wcfg.TEE = n, "simulated"
	}
	w, err := worker.New(wcfg)
	if err != nil {
		return nil, err
	}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	s.Workers = append(s.Workers, w)
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

// attest gives a worker a simulated TEE, a key keeper rotating epochs in
// the background, and a notary publishing evidence to the bucket.
func (s *Stack) attest(ctx context.Context, id string, eng engine.Engine) (*worker.KeeperNotary, error) {
	if s.SimRoot == nil {
		root, err := sim.LoadOrCreateRoot(filepath.Join(s.dataDir, "sim"))
		if err != nil {
			return nil, fmt.Errorf("loading simulated root: %w", err)
		}
		s.SimRoot = root
	}
	gpus := s.tee.GPUs
	if gpus == 0 {
		gpus = 1
	}
	att, err := sim.NewAttester(sim.Config{Root: s.SimRoot, GPUs: gpus, QuoteDelay: s.tee.QuoteDelay})
	if err != nil {
		return nil, fmt.Errorf("starting simulated TEE: %w", err)
	}
	models, err := eng.Models(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing models: %w", err)
	}
	ids := make([]string, len(models))
	for i, m := range models {
		ids[i] = m.ID
	}
	kv := s.Evidence
	keeper, err := enclave.NewKeeper(ctx, enclave.KeeperConfig{
		Attester: att,
		Identity: attest.WorkerIdentity{ID: id, Models: ids},
		Epoch:    s.tee.Epoch,
		Batch:    enclave.BatchConfig{Window: s.tee.BatchWindow},
		OnRotate: func(e *enclave.Epoch) {
			pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := kv.Put(pctx, e.ID, e.Raw); err != nil {
				s.log.Error("publishing evidence failed", "err", err)
			}
		},
		OnError: func(err error) { s.log.Error("key rotation failed", "err", err) },
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
	return worker.NewKeeperNotary(ctx, keeper, kv)
}

func (s *Stack) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
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
		for _, w := range s.Workers {
			_ = w.Stop(ctx)
		}
		for _, c := range s.cancel {
			c()
		}
		s.bg.Wait()
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
