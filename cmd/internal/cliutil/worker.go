package cliutil

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/internal/workernode"
	"github.com/teegate/teegate/worker"
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

// RunWorker builds the engine, starts the worker node and serves until
// ctx ends, then withdraws the worker, letting requests in flight finish.
// With an attester the worker connects by its evidence (the gateway's
// admission judges it; a server without admission accepts it as it is):
// the flags' URLs, TLS and reconnect settings apply, their credentials do
// not. Without one it connects with the flags' credentials and serves
// without receipts.
func RunWorker(ctx context.Context, nf NATSFlags, ef EngineFlags, wcfg worker.Config, opts WorkerOptions) error {
	if err := nf.Validate(); err != nil {
		return err
	}
	eng, err := ef.Build()
	if err != nil {
		return err
	}
	if wcfg.ModelRefresh == 0 {
		wcfg.ModelRefresh = ef.ModelRefresh
	}
	cfg := workernode.Config{Engine: eng, Attester: opts.Attester, Epoch: opts.Epoch, Provider: opts.Provider, Worker: wcfg, Logger: wcfg.Logger}
	if opts.Attester == nil {
		nc, err := nf.Connect("teegate-worker", wcfg.Logger)
		if err != nil {
			return err
		}
		defer nc.Close()
		cfg.Conn = nc
	} else {
		base, err := nf.Options("teegate-worker", wcfg.Logger)
		if err != nil {
			return err
		}
		cfg.Dial = func(o ...nats.Option) (*nats.Conn, error) {
			return nf.Dial(append(append([]nats.Option(nil), base...), o...)...)
		}
	}
	n, err := workernode.Start(ctx, cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return n.Close(sctx)
}
