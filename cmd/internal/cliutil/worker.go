package cliutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine"
)

// WorkerOptions are the worker's attestation settings.
type WorkerOptions struct {
	// Attester produces evidence; nil runs without attestation (no
	// receipts), which production policies refuse.
	Attester enclave.Attester
	// Epoch is the key epoch length.
	Epoch time.Duration
}

// RunWorker connects to NATS, builds the engine, attests, and serves until
// ctx ends, then withdraws the worker, letting requests in flight finish.
func RunWorker(ctx context.Context, natsURL string, ef EngineFlags, wcfg worker.Config, opts WorkerOptions) error {
	eng, err := ef.Build()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(natsURL, nats.Name("teegate-worker"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connecting to nats: %w", err)
	}
	defer nc.Close()
	wcfg.Conn, wcfg.Engine = nc, eng
	if wcfg.ID == "" {
		id, err := newWorkerID()
		if err != nil {
			return err
		}
		wcfg.ID = id
	}
	if opts.Attester != nil {
		stop, err := attestWorker(ctx, nc, eng, &wcfg, opts)
		if err != nil {
			return err
		}
		defer stop()
	}
	w, err := worker.New(wcfg)
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return w.Stop(sctx)
}

// attestWorker sets up the key keeper and the notary on wcfg; the returned
// func stops them.
func attestWorker(ctx context.Context, nc *nats.Conn, eng engine.Engine, wcfg *worker.Config, opts WorkerOptions) (func(), error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("connecting to jetstream: %w", err)
	}
	kv, err := worker.EnsureEvidenceBucket(ctx, js)
	if err != nil {
		return nil, err
	}
	models, err := eng.Models(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing models: %w", err)
	}
	ids := make([]string, len(models))
	for i, m := range models {
		ids[i] = m.ID
	}
	log := wcfg.Logger
	keeper, err := enclave.NewKeeper(ctx, enclave.KeeperConfig{
		Attester: opts.Attester,
		Identity: attest.WorkerIdentity{ID: wcfg.ID, Models: ids},
		Epoch:    opts.Epoch,
		OnRotate: func(e *enclave.Epoch) {
			pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := kv.Put(pctx, e.ID, e.Raw); err != nil && log != nil {
				log.Error("publishing evidence failed", "err", err)
			}
		},
		OnError: func(err error) {
			if log != nil {
				log.Error("key rotation failed", "err", err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("attesting: %w", err)
	}
	notary, err := worker.NewKeeperNotary(ctx, keeper, kv)
	if err != nil {
		keeper.Close()
		return nil, err
	}
	wcfg.Notary, wcfg.TEE = notary, opts.Attester.Kind()
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = keeper.Run(rctx)
	}()
	return func() {
		cancel()
		<-done
		keeper.Close()
	}, nil
}

func newWorkerID() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating worker id: %w", err)
	}
	return "w-" + hex.EncodeToString(b[:]), nil
}
