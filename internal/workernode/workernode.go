package workernode

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine"
)

// ErrConfig wraps every configuration problem.
var ErrConfig = errors.New("invalid worker node config")

// Config configures a worker node.
type Config struct {
	// Engine serves the requests. Required.
	Engine engine.Engine
	// Attester produces the evidence the worker joins by. Nil runs without
	// attestation on Conn (no receipts; production policies refuse it).
	Attester enclave.Attester
	// Dial opens a NATS connection with the options given appended to the
	// caller's (URLs, name, TLS, reconnect). Required with Attester: the
	// evidence is the credential.
	Dial func(opts ...nats.Option) (*nats.Conn, error)
	// Conn is a connection with static credentials. Required without
	// Attester; the caller owns it.
	Conn *nats.Conn
	// Provider is the party that operates the worker, stated in its
	// evidence (optional).
	Provider string
	// Epoch is the key epoch (0: the keeper's default); BatchWindow the
	// fresh-mode batching window (0: default).
	Epoch, BatchWindow time.Duration
	// Worker tunes the worker; its Engine, Keeper, TEE, Dial and Conn are
	// filled in, and an empty ID becomes a random "w-…" one.
	Worker worker.Config
	Logger *slog.Logger
}

// Validate checks cfg and applies defaults.
func (c *Config) Validate() error {
	if c.Engine == nil {
		return fmt.Errorf("no engine: %w", ErrConfig)
	}
	if c.Attester != nil && c.Dial == nil {
		return fmt.Errorf("an attested worker needs Dial: %w", ErrConfig)
	}
	if c.Attester == nil && c.Conn == nil {
		return fmt.Errorf("a worker without attestation needs Conn: %w", ErrConfig)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Worker.Logger == nil {
		c.Worker.Logger = c.Logger
	}
	if c.Worker.ID == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("generating worker id: %w", err)
		}
		c.Worker.ID = "w-" + hex.EncodeToString(b[:])
	}
	return nil
}

// Node is a running worker.
type Node struct {
	Worker *worker.Worker
	// Keeper holds the key epochs (nil without an attester).
	Keeper *enclave.Keeper

	cancel context.CancelFunc
	done   chan struct{}
}

// Start attests the first key epoch, starts the rotation and the worker,
// and returns once the worker knows its admission (see
// worker.Worker.Admission): a refused worker is not an error.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{}
	defer func() {
		if err != nil {
			n.stopKeeper()
		}
	}()
	wcfg := cfg.Worker
	wcfg.Engine = cfg.Engine
	var wref atomic.Pointer[worker.Worker]
	if cfg.Attester == nil {
		wcfg.Conn = cfg.Conn
	} else {
		if err := n.startKeeper(ctx, cfg, func(e *enclave.Epoch) {
			if w := wref.Load(); w != nil {
				w.EpochRotated(e)
			}
		}); err != nil {
			return nil, err
		}
		wcfg.Keeper, wcfg.TEE, wcfg.Dial = n.Keeper, cfg.Attester.Kind(), cfg.Dial
	}
	w, err := worker.New(wcfg)
	if err != nil {
		return nil, err
	}
	wref.Store(w)
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	n.Worker = w
	return n, nil
}

// startKeeper attests the first epoch and rotates epochs until Close;
// onRotate hears of each new epoch after the first.
func (n *Node) startKeeper(ctx context.Context, cfg Config, onRotate func(*enclave.Epoch)) error {
	models, err := cfg.Engine.Models(ctx)
	if err != nil {
		return fmt.Errorf("listing models: %w", err)
	}
	ids := make([]string, len(models))
	for i, m := range models {
		ids[i] = m.ID
	}
	log := cfg.Logger
	keeper, err := enclave.NewKeeper(ctx, enclave.KeeperConfig{
		Attester: cfg.Attester,
		Identity: attest.WorkerIdentity{ID: cfg.Worker.ID, Provider: cfg.Provider, Models: ids},
		Epoch:    cfg.Epoch,
		Batch:    enclave.BatchConfig{Window: cfg.BatchWindow},
		OnRotate: onRotate,
		OnError:  func(err error) { log.Error("key rotation failed", "err", err) },
	})
	if err != nil {
		return fmt.Errorf("attesting worker: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	n.Keeper, n.cancel, n.done = keeper, cancel, make(chan struct{})
	go func() {
		defer close(n.done)
		_ = keeper.Run(rctx)
	}()
	return nil
}

func (n *Node) stopKeeper() {
	if n.Keeper == nil {
		return
	}
	n.cancel()
	<-n.done
	n.Keeper.Close()
}

// Drain withdraws the worker without failing a request (worker.Drain;
// ctx bounds the grace period), then stops the key rotation.
func (n *Node) Drain(ctx context.Context) (abandoned int, err error) {
	if n.Worker != nil {
		abandoned, err = n.Worker.Drain(ctx)
	}
	n.stopKeeper()
	return abandoned, err
}

// Close withdraws the worker, letting requests in flight finish (bounded
// by ctx), then stops the key rotation.
func (n *Node) Close(ctx context.Context) error {
	var err error
	if n.Worker != nil {
		err = n.Worker.Stop(ctx)
	}
	n.stopKeeper()
	return err
}
