package attest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/teegate/teegate/attest/claims"
)

// CPUVerifier verifies one kind of CPU evidence (a TDX quote, an SNP report,
// an SGX quote) and returns its claims. It must set Claims.ReportData to the
// evidence's 64-byte report data (hex); VerifyBundle checks the binding, the
// verifier does not need to.
type CPUVerifier interface {
	VerifyCPU(ctx context.Context, evidence []byte, opts CPUOptions) (*claims.Claims, error)
}

// CPUVerifierFunc adapts a function to CPUVerifier.
type CPUVerifierFunc func(ctx context.Context, evidence []byte, opts CPUOptions) (*claims.Claims, error)

// VerifyCPU calls f.
func (f CPUVerifierFunc) VerifyCPU(ctx context.Context, evidence []byte, opts CPUOptions) (*claims.Claims, error) {
	return f(ctx, evidence, opts)
}

// CPUOptions are passed to a CPUVerifier for one bundle.
type CPUOptions struct {
	// Now is the verification time.
	Now time.Time
	// SimulatedRoots, when non-nil, replace the vendor root certificates:
	// the evidence must chain to one of them. Nil for real bundles, which
	// must chain to the vendor's root.
	SimulatedRoots []*x509.Certificate
}

// GPUVerifier verifies one GPU's evidence. It must report in
// claims.GPU.NonceMatched whether the report's nonce equals ExpectedNonce
// (a mismatch is not an error for it: VerifyBundle turns it into
// ErrBindingGPUNonce). Whatever CCMode it returns, VerifyBundle replaces it
// with the bundle's cc_mode (CCModeUnknown when absent): the mode is not in
// the GPU report but in the GPU evidence digest, which only the binding
// check establishes.
type GPUVerifier interface {
	VerifyGPU(ctx context.Context, ev GPUEvidence, opts GPUOptions) (*claims.GPU, error)
}

// GPUVerifierFunc adapts a function to GPUVerifier.
type GPUVerifierFunc func(ctx context.Context, ev GPUEvidence, opts GPUOptions) (*claims.GPU, error)

// VerifyGPU calls f.
func (f GPUVerifierFunc) VerifyGPU(ctx context.Context, ev GPUEvidence, opts GPUOptions) (*claims.GPU, error) {
	return f(ctx, ev, opts)
}

// GPUOptions are passed to a GPUVerifier for one GPU.
type GPUOptions struct {
	Now time.Time
	// Index is the GPU's position in the bundle.
	Index int
	// ExpectedNonce is GPUNonce(signing_pub, epoch_nonce).
	ExpectedNonce [32]byte
	// SimulatedRoots as in CPUOptions.
	SimulatedRoots []*x509.Certificate
}

// VerifyOptions configure bundle verification.
type VerifyOptions struct {
	// CPU maps a bundle TEE kind ("tdx", "sgx", "sev-snp") to its verifier.
	CPU map[string]CPUVerifier
	// GPU verifies GPU evidence; required when a bundle carries GPUs.
	GPU GPUVerifier
	// AllowSimulated admits bundles that carry simulated roots; their
	// claims always say TEE "simulated" and Simulated true.
	AllowSimulated bool
	// PinnedSimulatedRoots, when non-empty, restricts simulated bundles to
	// these DER roots (for example the local simulated root of a dev box).
	PinnedSimulatedRoots [][]byte
	// MaxAge rejects bundles older than this (0: no limit). Bundles created
	// more than MaxClockSkew in the future are always rejected.
	MaxAge time.Duration
	// MaxClockSkew tolerated for Created in the future (default 5 minutes).
	// The Go SDK (attest/client) uses it for its receipt checks too
	// (ReceiptCheck.MaxClockSkew): receipts from the future, and against
	// the bundle's epoch window.
	MaxClockSkew time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (o *VerifyOptions) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// Verified is a bundle that passed VerifyBundle, with its id and claims.
// Receipt verification takes a *Verified so that it cannot be handed a
// bundle nobody checked. Treat all fields as read-only.
type Verified struct {
	ID     string
	Raw    []byte
	Bundle *Bundle
	Claims *claims.Claims
}

// VerifyBundle decodes canonical bundle bytes, verifies the CPU and GPU
// evidence with the registered verifiers and checks the key binding of
// DESIGN §3.1. It returns the claims with Binding filled.
func VerifyBundle(ctx context.Context, raw []byte, opts VerifyOptions) (*claims.Claims, error) {
	v, err := verifyBundle(ctx, raw, &opts)
	if err != nil {
		return nil, err
	}
	return v.Claims, nil
}

// VerifyBundleFull is VerifyBundle returning the decoded bundle and id too.
func VerifyBundleFull(ctx context.Context, raw []byte, opts VerifyOptions) (*Verified, error) {
	return verifyBundle(ctx, raw, &opts)
}

// verifyBundle runs the checks in the order docs/attestation.md gives:
// decode, simulated gate, bundle signature, age, CPU evidence, GPU evidence,
// report-data binding, GPU-nonce binding.
func verifyBundle(ctx context.Context, raw []byte, opts *VerifyOptions) (*Verified, error) {
	b, err := DecodeBundle(raw)
	if err != nil {
		return nil, fmt.Errorf("verifying bundle: %w", err)
	}
	now := opts.now()
	var simRoots []*x509.Certificate
	if b.Simulated() {
		if !opts.AllowSimulated {
			return nil, fmt.Errorf("verifying bundle: %w", ErrSimulatedNotAllowed)
		}
		for i, der := range b.SimulatedRoots {
			if len(opts.PinnedSimulatedRoots) > 0 && !containsDER(opts.PinnedSimulatedRoots, der) {
				return nil, fmt.Errorf("verifying bundle: simulated root %d: %w", i, ErrSimulatedRootUntrusted)
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("verifying bundle: parsing simulated root %d: %w", i, ErrMalformed)
			}
			simRoots = append(simRoots, c)
		}
	}
	// The self-signature comes before the age check: an age computed from
	// an unauthenticated timestamp would mean nothing.
	if !ed25519.Verify(ed25519.PublicKey(b.SigningPub), b.SigningInput(), b.Signature) {
		return nil, fmt.Errorf("verifying bundle: %w", ErrBundleSignature)
	}
	if err := checkAge(b.Created, now, opts); err != nil {
		return nil, fmt.Errorf("verifying bundle: %w", err)
	}

	cv := opts.CPU[b.TEE]
	if cv == nil {
		return nil, fmt.Errorf("verifying bundle: tee %q: %w", b.TEE, ErrUnknownTEE)
	}
	c, err := cv.VerifyCPU(ctx, b.CPUEvidence, CPUOptions{Now: now, SimulatedRoots: simRoots})
	if err != nil {
		return nil, fmt.Errorf("verifying bundle: %w: %w", ErrCPUEvidence, err)
	}
	if c == nil {
		return nil, fmt.Errorf("verifying bundle: CPU verifier returned no claims: %w", ErrCPUEvidence)
	}

	nonce := GPUNonce(b.SigningPub, b.EpochNonce)
	gpus := make([]claims.GPU, 0, len(b.GPUs))
	for i, g := range b.GPUs {
		if opts.GPU == nil {
			return nil, fmt.Errorf("verifying bundle: %w", ErrNoGPUVerifier)
		}
		gc, err := opts.GPU.VerifyGPU(ctx, g, GPUOptions{Now: now, Index: i, ExpectedNonce: nonce, SimulatedRoots: simRoots})
		if err != nil {
			return nil, fmt.Errorf("verifying bundle: gpu %d: %w: %w", i, ErrGPUEvidence, err)
		}
		if gc == nil {
			return nil, fmt.Errorf("verifying bundle: gpu %d: verifier returned no claims: %w", i, ErrGPUEvidence)
		}
		g2 := *gc
		g2.Index = i
		g2.CCMode = g.CCMode
		if g2.CCMode == "" {
			g2.CCMode = CCModeUnknown
		}
		if simRoots != nil {
			g2.Arch = "simulated"
		}
		gpus = append(gpus, g2)
	}

	want := ReportData(b.SigningPub, b.HPKEPub, GPUEvidenceDigest(b.GPUs), b.EpochNonce, b.Epoch)
	got, err := hex.DecodeString(c.ReportData)
	if err != nil || !bytes.Equal(got, want[:]) {
		return nil, fmt.Errorf("verifying bundle: %w", ErrBindingReportData)
	}
	for i := range gpus {
		if !gpus[i].NonceMatched {
			return nil, fmt.Errorf("verifying bundle: gpu %d: %w", i, ErrBindingGPUNonce)
		}
	}

	c.Version = claims.Version
	c.GPUs = gpus
	c.Binding = &claims.Binding{
		ReportDataMatched: true,
		GPUNoncesMatched:  true,
		SigningKey:        hex.EncodeToString(b.SigningPub),
		HPKEKey:           hex.EncodeToString(b.HPKEPub),
	}
	if c.Sources == nil {
		c.Sources = map[string]string{}
	}
	c.Sources["binding"] = "attest.binding_v2"
	c.Epoch = &claims.Epoch{
		NotBefore:    b.Epoch.NotBefore,
		NotAfter:     b.Epoch.NotAfter,
		GraceSeconds: int64(b.Epoch.Grace / time.Second),
		ErasedAt:     b.Epoch.ErasedAt(),
	}
	// Stated by the TEE, bound by the report data.
	c.Sources["epoch"] = "attest.binding_v2"
	if len(gpus) > 0 {
		// Reported by the TEE, bound by the GPU evidence digest.
		c.Sources["gpu_cc_mode"] = "attest.binding_v2"
	}
	if simRoots != nil {
		// Whatever the format verifiers said, simulated roots make the
		// whole bundle simulated: production policies key on this.
		c.TEE = claims.TEESimulated
		c.Simulated = true
		c.Sources["simulated"] = "attest.simulated_roots"
	}
	c.CreatedAt = b.Created
	c.AgeSeconds = int64(now.Sub(b.Created) / time.Second)
	return &Verified{ID: BundleID(raw), Raw: raw, Bundle: b, Claims: c}, nil
}

func checkAge(created, now time.Time, opts *VerifyOptions) error {
	skew := opts.MaxClockSkew
	if skew == 0 {
		skew = 5 * time.Minute
	}
	if created.After(now.Add(skew)) {
		return fmt.Errorf("created in the future: %w", ErrEvidenceExpired)
	}
	if opts.MaxAge > 0 && now.Sub(created) > opts.MaxAge {
		return fmt.Errorf("older than %s: %w", opts.MaxAge, ErrEvidenceExpired)
	}
	return nil
}

func containsDER(set [][]byte, der []byte) bool {
	for _, s := range set {
		if bytes.Equal(s, der) {
			return true
		}
	}
	return false
}
