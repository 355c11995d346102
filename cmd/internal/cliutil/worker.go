package cliutil

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/worker"
)

// RunWorker connects to NATS, builds the engine and serves until ctx ends,
// then withdraws the worker, letting requests in flight finish.
func RunWorker(ctx context.Context, natsURL string, ef EngineFlags, wcfg worker.Config) error {
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
