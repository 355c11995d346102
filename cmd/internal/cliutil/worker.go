package cliutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

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
	// Provider names who operates this machine; the evidence states it
	// and the audit ledger sums usage by it.
	Provider string
}

// RunWorker builds the engine, attests, connects to NATS and serves until
// ctx ends, then withdraws the worker, letting requests in flight finish.
// With an attester the worker connects by its evidence (the gateway's
// admission judges it; a server without admission accepts it as it is);
// without one it connects with whatever the URL carries, and serves
// without receipts.
func RunWorker(ctx context.Context, nf NATSFlags, ef EngineFlags, wcfg worker.Config, opts WorkerOptions) error {
	if err := nf.Validate(); err != nil {
		return err
	}
	eng, err := ef.Build()
	if err != nil {
		return err
	}
	wcfg.Engine = eng
	if wcfg.ID == "" {
		id, err := newWorkerID()
		if err != nil {
			return err
		}
		wcfg.ID = id
	}
	base, err := nf.Options("teegate-worker", wcfg.Logger)
	if err != nil {
		return err
	}
	var wref atomic.Pointer[worker.Worker]
	if opts.Attester == nil {
		nc, err := nf.Connect("teegate-worker", wcfg.Logger)
		if err != nil {
			return err
		}
		defer nc.Close()
		wcfg.Conn = nc
	} else {
		keeper, stop, err := startKeeper(ctx, eng, wcfg, opts, func(e *enclave.Epoch) {
			if w := wref.Load(); w != nil {
				w.EpochRotated(e)
			}
		})
		if err != nil {
			return err
		}
		defer stop()
		wcfg.Keeper, wcfg.TEE = keeper, opts.Attester.Kind()
		wcfg.Dial = func(o ...nats.Option) (*nats.Conn, error) {
			// Evidence is the credential: no static one goes along.
			return nf.Dial(append(append([]nats.Option(nil), base...), o...)...)
		}
	}
	w, err := worker.New(wcfg)
	if err != nil {
		return err
	}
	wref.Store(w)
	if err := w.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return w.Stop(sctx)
}

// startKeeper attests the first key epoch and rotates epochs in the
// background; the returned func stops it.
func startKeeper(ctx context.Context, eng engine.Engine, wcfg worker.Config, opts WorkerOptions, onRotate func(*enclave.Epoch)) (*enclave.Keeper, func(), error) {
	models, err := eng.Models(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("listing models: %w", err)
	}
	ids := make([]string, len(models))
	for i, m := range models {
		ids[i] = m.ID
	}
	log := wcfg.Logger
	keeper, err := enclave.NewKeeper(ctx, enclave.KeeperConfig{
		Attester: opts.Attester,
		Identity: attest.WorkerIdentity{ID: wcfg.ID, Models: ids, Provider: opts.Provider},
		Epoch:    opts.Epoch,
		OnRotate: onRotate,
		OnError: func(err error) {
			if log != nil {
				log.Error("key rotation failed", "err", err)
			}
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("attesting: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = keeper.Run(rctx)
	}()
	return keeper, func() {
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
