package enclave

import (
	"context"
	"fmt"
	"time"

	"github.com/teegate/teegate/attest"
)

// Attester kinds.
const (
	KindTDX       = "tdx"
	KindSGX       = "sgx"
	KindSEVSNP    = "sev-snp"
	KindSimulated = "simulated"
)

// CPUEvidence is what a CPU TEE returns for one report-data value.
type CPUEvidence struct {
	// Format is the bundle TEE kind the evidence is in: "tdx", "sgx" or
	// "sev-snp" (a simulated TEE uses a real format).
	Format string
	// Raw is the quote or report, as verifiers expect it.
	Raw []byte
	// SimulatedRoots are the DER roots of a simulated TEE; nil on hardware.
	SimulatedRoots [][]byte
}

// Attester produces the evidence of one machine. The two steps are separate
// because the CPU report data commits to the GPU evidence, which in turn
// carries a nonce derived from the key: GPUs first, then the CPU.
type Attester interface {
	// Kind is "tdx", "sgx", "sev-snp" or "simulated".
	Kind() string
	// GPUEvidence returns, for each GPU in CC mode, its report over nonce
	// and its certificate chain, in a stable order. No GPUs: nil, nil.
	GPUEvidence(ctx context.Context, nonce [32]byte) ([]attest.GPUEvidence, error)
	// CPUEvidence returns the CPU evidence carrying reportData.
	CPUEvidence(ctx context.Context, reportData [64]byte) (CPUEvidence, error)
}

// CPUSource and GPUSource are the halves of an Attester, for machines whose
// CPU and GPU evidence come from different drivers.
type CPUSource interface {
	Kind() string
	CPUEvidence(ctx context.Context, reportData [64]byte) (CPUEvidence, error)
}

// GPUSource returns the GPU evidence of a machine.
type GPUSource interface {
	GPUEvidence(ctx context.Context, nonce [32]byte) ([]attest.GPUEvidence, error)
}

// Combine makes an Attester from a CPU source and an optional GPU source
// (nil: a machine without confidential GPUs).
func Combine(cpu CPUSource, gpu GPUSource) Attester { return combined{cpu, gpu} }

type combined struct {
	CPUSource
	gpu GPUSource
}

func (c combined) GPUEvidence(ctx context.Context, nonce [32]byte) ([]attest.GPUEvidence, error) {
	if c.gpu == nil {
		return nil, nil
	}
	return c.gpu.GPUEvidence(ctx, nonce)
}

// buildBundle runs the binding of DESIGN §3.1 for one set of public keys,
// one epoch nonce and the epoch's window, signs it with the epoch key (sign) and returns the bundle
// with its canonical bytes.
func buildBundle(ctx context.Context, a Attester, signingPub, hpkePub []byte, sign func([]byte) ([]byte, error), nonce [32]byte, win attest.EpochWindow, id attest.WorkerIdentity, now time.Time) (*attest.Bundle, []byte, error) {
	gpus, err := a.GPUEvidence(ctx, attest.GPUNonce(signingPub, nonce))
	if err != nil {
		return nil, nil, fmt.Errorf("collecting GPU evidence: %w", err)
	}
	rd := attest.ReportData(signingPub, hpkePub, attest.GPUEvidenceDigest(gpus), nonce, win)
	cpu, err := a.CPUEvidence(ctx, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("collecting CPU evidence: %w", err)
	}
	b := &attest.Bundle{
		Version:        attest.BundleVersion,
		TEE:            cpu.Format,
		CPUEvidence:    cpu.Raw,
		GPUs:           gpus,
		SigningPub:     signingPub,
		HPKEPub:        hpkePub,
		EpochNonce:     nonce,
		Created:        now.UTC().Truncate(time.Second),
		Epoch:          win,
		Worker:         id,
		SimulatedRoots: cpu.SimulatedRoots,
	}
	sig, err := sign(b.SigningInput())
	if err != nil {
		return nil, nil, fmt.Errorf("signing bundle: %w", err)
	}
	b.Signature = sig
	raw, err := b.Encode()
	if err != nil {
		return nil, nil, fmt.Errorf("building bundle: %w", err)
	}
	return b, raw, nil
}
