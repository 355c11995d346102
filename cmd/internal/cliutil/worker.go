package cliutil

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/internal/workernode"
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
	// DrainGrace bounds how long the worker, told to stop, waits for its
	// requests in flight (default 30 s); IdleExit makes it leave after
	// serving nothing for that long (0: never).
	DrainGrace time.Duration
	IdleExit   time.Duration
	// Log receives the drain's outcome (nil: none).
	Log *slog.Logger
}

// DrainFlags are --drain-grace and --idle-exit.
type DrainFlags struct {
	Grace, Idle time.Duration
}

// Register adds the flags to fs.
func (d *DrainFlags) Register(fs *flag.FlagSet) {
	fs.DurationVar(&d.Grace, "drain-grace", 30*time.Second,
		"on SIGTERM/SIGINT: stop taking requests, advertise draining and wait this long for those in flight before leaving")
	fs.DurationVar(&d.Idle, "idle-exit", 0, "leave (drained, exit 0) after serving nothing for this long; 0: never")
}

// waitForEngine returns once the engine lists a model, asking again with a
// growing pause (first, doubling to 15 s) while it does not: an inference
// server beside the worker (vLLM loading its weights, Ollama starting) is
// often not up when the worker is. The evidence must name the models, so
// the worker cannot join before. It fails only when ctx ends.
func waitForEngine(ctx context.Context, eng engine.Engine, log *slog.Logger, first time.Duration) error {
	pause := first
	for {
		models, err := eng.Models(ctx)
		if err == nil && len(models) > 0 {
			return nil
		}
		if log != nil {
			log.Warn("engine not serving yet; waiting for it", "retry_in", pause.String(), "err", err)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			if err == nil {
				err = errors.New("engine lists no models")
			}
			return fmt.Errorf("waiting for the engine: %w (last: %w)", ctx.Err(), err)
		case <-t.C:
		}
		pause = min(2*pause, 15*time.Second)
	}
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
	if err := waitForEngine(ctx, eng, wcfg.Logger, time.Second); err != nil {
		return err
	}
	n, err := workernode.Start(ctx, cfg)
	if err != nil {
		return err
	}
	var idle <-chan struct{}
	if opts.IdleExit > 0 {
		idle = n.Worker.Idle(opts.IdleExit)
	}
	why := "told to stop"
	select {
	case <-ctx.Done():
	case <-idle:
		why = "idle"
	}
	grace := opts.DrainGrace
	if grace <= 0 {
		grace = 30 * time.Second
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log.Info("worker leaving: draining", "why", why, "grace", grace.String(), "in_flight", n.Worker.InFlight())
	dctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	abandoned, err := n.Drain(dctx)
	if abandoned > 0 {
		log.Warn("drain grace period ended with requests in flight", "abandoned", abandoned)
	}
	if err != nil {
		return fmt.Errorf("withdrawing the worker: %w", err)
	}
	log.Info("worker left", "why", why)
	return nil
}
