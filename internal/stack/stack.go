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
	Logger  *slog.Logger
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
	for i, eng := range cfg.Engines {
		if _, err := s.AddWorker(ctx, eng, cfg.Worker, fmt.Sprintf("teegate-worker-%d", i)); err != nil {
			return nil, err
		}
	}
	gcfg := cfg.Gateway
	gcfg.Conn, gcfg.Keys, gcfg.Directory = gwConn, s.Keys, s.Dir
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
