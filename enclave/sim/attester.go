package sim

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/sim/simgpu"
	"github.com/teegate/teegate/enclave/sim/simtdx"
)

// DefaultQuoteDelay approximates a real TDX quote (TDREPORT plus the quoting
// enclave's signature).
const DefaultQuoteDelay = 50 * time.Millisecond

// NoDelay as Config.QuoteDelay turns the simulated latency off.
const NoDelay time.Duration = -1

// GPUArch is the architecture label of simulated GPU evidence (what the
// NVIDIA verifier derives from a simulated leaf certificate).
const GPUArch = "simulated"

// Config configures the simulated TEE.
type Config struct {
	// Root is the simulated root CA (LoadOrCreateRoot). Required.
	Root *Root
	// GPUs is the number of simulated confidential GPUs (0: none).
	GPUs int
	// QuoteDelay is added to every CPU quote: 0 means DefaultQuoteDelay,
	// NoDelay (or any negative value) none.
	QuoteDelay time.Duration
	// Measurements of the simulated TD; nil means simtdx.DefaultMeasurements.
	Measurements *simtdx.Measurements
	// GPUCCMode is the confidential-computing mode the simulated GPUs
	// report: "" or attest.CCModeOn (the default), attest.CCModeDevTools or
	// attest.CCModeOff, so that policies can be exercised against each.
	GPUCCMode string
}

// Attester is the simulated TEE's enclave.Attester.
type Attester struct {
	root   *Root
	quoter *simtdx.Quoter
	gpus   []*simgpu.GPU
	ccMode string
	delay  time.Duration
	quotes atomic.Int64
}

var _ enclave.Attester = (*Attester)(nil)

// NewAttester builds the simulated TDX quoting chain and GPUs under root.
func NewAttester(cfg Config) (*Attester, error) {
	if cfg.Root == nil {
		return nil, errors.New("simulated TEE: no root")
	}
	if cfg.GPUs < 0 || cfg.GPUs > 16 {
		return nil, fmt.Errorf("simulated TEE: %d GPUs", cfg.GPUs)
	}
	ccMode := cfg.GPUCCMode
	switch ccMode {
	case "":
		ccMode = attest.CCModeOn
	case attest.CCModeOn, attest.CCModeOff, attest.CCModeDevTools:
	default:
		return nil, fmt.Errorf("simulated TEE: GPU CC mode %q (want on, off or devtools)", ccMode)
	}
	var ms []simtdx.Measurements
	if cfg.Measurements != nil {
		ms = append(ms, *cfg.Measurements)
	}
	q, err := simtdx.NewQuoter(cfg.Root.Cert, cfg.Root.Key, ms...)
	if err != nil {
		return nil, fmt.Errorf("simulated TEE: %w", err)
	}
	a := &Attester{root: cfg.Root, quoter: q, ccMode: ccMode, delay: cfg.QuoteDelay}
	if a.delay == 0 {
		a.delay = DefaultQuoteDelay
	}
	for range cfg.GPUs {
		g, err := simgpu.NewGPU(cfg.Root.Cert, cfg.Root.Key)
		if err != nil {
			return nil, fmt.Errorf("simulated TEE: %w", err)
		}
		a.gpus = append(a.gpus, g)
	}
	return a, nil
}

// Kind is "simulated".
func (a *Attester) Kind() string { return enclave.KindSimulated }

// Quotes is the number of CPU quotes produced so far.
func (a *Attester) Quotes() int64 { return a.quotes.Load() }

// GPUEvidence returns each simulated GPU's SPDM report over nonce, with
// the configured CC mode. Unlike enclave/nvgpu it does not refuse mode
// "off": the simulation exists to show what verifiers and policies make of
// each mode.
func (a *Attester) GPUEvidence(ctx context.Context, nonce [32]byte) ([]attest.GPUEvidence, error) {
	var out []attest.GPUEvidence
	for i, g := range a.gpus {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rep, chain, err := g.Report(nonce)
		if err != nil {
			return nil, fmt.Errorf("simulated GPU %d report: %w", i, err)
		}
		out = append(out, attest.GPUEvidence{Arch: GPUArch, CCMode: a.ccMode, Report: rep, CertChain: chain})
	}
	return out, nil
}

// CPUEvidence returns a simulated TDX v4 quote over reportData after the
// configured delay.
func (a *Attester) CPUEvidence(ctx context.Context, reportData [64]byte) (enclave.CPUEvidence, error) {
	if a.delay > 0 {
		t := time.NewTimer(a.delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return enclave.CPUEvidence{}, ctx.Err()
		case <-t.C:
		}
	}
	raw, err := a.quoter.Quote(reportData)
	if err != nil {
		return enclave.CPUEvidence{}, fmt.Errorf("simulated TDX quote: %w", err)
	}
	a.quotes.Add(1)
	return enclave.CPUEvidence{Format: "tdx", Raw: raw, SimulatedRoots: [][]byte{a.root.Cert.Raw}}, nil
}
