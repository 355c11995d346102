// Command teegate-worker is the minimal worker binary meant to be measured
// into a TEE: it connects to NATS, attests with the TEE it runs in, and
// serves one engine. Its default build links no simulated attestation and no
// dev-only code (deps_test.go pins that); `-tags teegate_sim` adds the
// simulated TEE for development.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/teegate/teegate/cmd/internal/cliutil"
	"github.com/teegate/teegate/enclave"
)

// teeConfig is what a TEE factory may need.
type teeConfig struct {
	DataDir string
	// GPUs is the simulated GPU count; GPUMode the real GPUs' use:
	// auto, require or off.
	GPUs    int
	GPUMode string
	Log     *slog.Logger
}

// teeFactories maps a --tee value to its attester. Files with build tags
// add entries; the default build has only real hardware.
var teeFactories = map[string]func(ctx context.Context, cfg teeConfig) (enclave.Attester, error){}

func teeNames() string {
	names := make([]string, 0, len(teeFactories))
	for n := range teeFactories {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("teegate-worker", flag.ContinueOnError)
	var nf cliutil.NATSFlags // -nats defaults to $NATS_URL, else $TEEGATE_NATS_URL (deploy/ego/enclave.json)
	nf.Register(fs)
	var obs cliutil.ObserveFlags
	obs.Register(fs, "json", true)
	conc := fs.Int("max-concurrency", 64, "requests served at once")
	tee := fs.String("tee", "auto", "TEE to attest with: auto, none, or one of the kinds built in")
	dataDir := fs.String("data-dir", cliutil.DefaultDataDir(), "data directory (simulated TEE keys only)")
	gpus := fs.Int("gpus", 1, "simulated GPUs (simulated TEE only)")
	gpuMode := fs.String("gpu", "auto", "confidential GPUs: auto (use them when in CC mode), require, off")
	epoch := fs.Duration("epoch", time.Hour, "key epoch: how often the worker re-attests with fresh keys")
	provider := fs.String("provider", "", "who operates this machine (stated in the evidence; the audit ledger sums usage by it)")
	var ef cliutil.EngineFlags
	ef.Register(fs)
	var df cliutil.DrainFlags
	df.Register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log, err := obs.Logger(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "teegate-worker:", err)
		return 2
	}
	ctx, cancel := cliutil.SignalContext()
	defer cancel()
	var att enclave.Attester
	switch *tee {
	case "none":
		log.Warn("running without attestation: no receipts; production policies refuse this worker")
	case "auto":
		att, err = autoTEE(ctx, teeConfig{DataDir: *dataDir, GPUs: *gpus, GPUMode: *gpuMode}, log)
	default:
		f, ok := teeFactories[*tee]
		if !ok {
			fmt.Fprintf(os.Stderr, "teegate-worker: unknown -tee %q (this build has: auto, none, %s)\n", *tee, teeNames())
			return 2
		}
		att, err = f(ctx, teeConfig{DataDir: *dataDir, GPUs: *gpus, GPUMode: *gpuMode, Log: log})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "teegate-worker:", err)
		return 1
	}
	wcfg, stop, err := obs.Worker(ctx, "teegate-worker", log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "teegate-worker:", err)
		return 2
	}
	defer stop()
	wcfg.MaxConcurrency = *conc
	if err := cliutil.RunWorker(ctx, nf, ef, wcfg, cliutil.WorkerOptions{Attester: att, Epoch: *epoch, Provider: *provider,
		DrainGrace: df.Grace, IdleExit: df.Idle, Log: log}); err != nil {
		fmt.Fprintln(os.Stderr, "teegate-worker:", err)
		return 1
	}
	return 0
}
