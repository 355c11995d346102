// Command teegate-worker is the minimal worker binary meant to be measured
// into a TEE: it connects to NATS, attests, and serves one engine. It links
// no simulated attestation and no dev-only code (a test pins that).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/cmd/internal/cliutil"
	"github.com/teegate/teegate/worker"
)

func main() {
	fs := flag.NewFlagSet("teegate-worker", flag.ContinueOnError)
	natsURL := fs.String("nats", nats.DefaultURL, "NATS server URL")
	level := fs.String("log-level", "info", "log level")
	conc := fs.Int("max-concurrency", 64, "requests served at once")
	var ef cliutil.EngineFlags
	ef.Register(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	log, err := cliutil.NewLogger(os.Stderr, *level)
	if err != nil {
		fmt.Fprintln(os.Stderr, "teegate-worker:", err)
		os.Exit(2)
	}
	ctx, cancel := cliutil.SignalContext()
	defer cancel()
	if err := cliutil.RunWorker(ctx, *natsURL, ef, worker.Config{MaxConcurrency: *conc, Logger: log}); err != nil {
		fmt.Fprintln(os.Stderr, "teegate-worker:", err)
		os.Exit(1)
	}
}
