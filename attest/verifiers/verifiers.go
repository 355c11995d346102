package verifiers

import (
	"context"
	"crypto/x509"
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/collateral"
	"github.com/teegate/teegate/attest/nvidia"
	"github.com/teegate/teegate/attest/pcs"
	"github.com/teegate/teegate/attest/sgx"
	"github.com/teegate/teegate/attest/snp"
	"github.com/teegate/teegate/attest/tdx"
)

// Config chooses trust anchors and reference material. The zero value uses
// the vendors' embedded roots and no collateral.
type Config struct {
	// AllowSimulated admits simulated bundles (claims then say simulated).
	AllowSimulated bool
	// PinnedSimulatedRoots restricts simulated bundles to these DER roots.
	PinnedSimulatedRoots [][]byte
	// IntelCollateral or Getter supply Intel collateral for TCB evaluation.
	IntelCollateral *pcs.Collateral
	Getter          pcs.Getter
	// NVIDIARoots is the device identity root pool; nil means the embedded
	// NVIDIA Device Identity CA.
	NVIDIARoots *x509.CertPool
	// RIMRoots (nil: the embedded NVIDIA RIM root) and RIMs are NVIDIA
	// reference measurements.
	RIMRoots *x509.CertPool
	RIMs     []*nvidia.RIM
	// SNPCertChain, when set, is the trusted AMD KDS cert_chain PEM (ASK
	// and/or ASVK, then ARK) instead of the embedded AMD roots; VLEK-signed
	// reports need an ASVK (the embedded roots carry one per product line).
	SNPCertChain []byte
	// SNPMinimumTCB states the lowest acceptable SEV-SNP TCB per product
	// line; without an entry the claimed status is Unknown.
	SNPMinimumTCB map[string]snp.TCBParts
	// Collateral is a loaded collateral directory (attest/collateral):
	// Intel collateral when Collateral and Getter are unset, AMD CRLs,
	// NVIDIA OCSP responses, and the NVIDIA RIMs of each GPU's report (by
	// RIM id). Revocation data it holds is always checked.
	Collateral *collateral.Set
	// RequireRevocation fails a chain for which Collateral holds no
	// revocation data (Intel PCK and root CRLs, the AMD CRL of the ARK,
	// OCSP for each NVIDIA device-chain certificate).
	RequireRevocation bool
	// MaxAge rejects older bundles (0: no limit).
	MaxAge time.Duration
	Now    func() time.Time
}

// Options returns VerifyOptions with every TEE kind wired.
func Options(cfg Config) attest.VerifyOptions {
	chains := nvidia.NewChainCache(256)
	if cfg.NVIDIARoots == nil {
		cfg.NVIDIARoots = NVIDIADeviceRoots()
	}
	if cfg.RIMRoots == nil {
		cfg.RIMRoots = NVIDIARIMRoots()
	}
	pool := func(roots []*x509.Certificate) *x509.CertPool {
		p := x509.NewCertPool()
		for _, r := range roots {
			p.AddCert(r)
		}
		return p
	}
	set := cfg.Collateral
	getter := cfg.Getter
	if getter == nil && cfg.IntelCollateral == nil && set != nil {
		getter = set.IntelGetter()
	}
	var amdCRLs, vceks, ocsp [][]byte
	if set != nil {
		amdCRLs, vceks, ocsp = set.AMDCRLs, set.AMDVCEKs, set.OCSP
	}
	tdxOpts := func(o attest.CPUOptions) tdx.Options {
		to := tdx.Options{Collateral: cfg.IntelCollateral, Getter: getter, Now: func() time.Time { return o.Now }, CheckCRL: cfg.RequireRevocation}
		if o.SimulatedRoots != nil {
			// Simulated quotes carry no Intel collateral.
			to = tdx.Options{TrustedRoots: pool(o.SimulatedRoots), Now: to.Now}
		}
		return to
	}
	return attest.VerifyOptions{
		CPU: map[string]attest.CPUVerifier{
			claims.TEETDX: attest.CPUVerifierFunc(func(ctx context.Context, ev []byte, o attest.CPUOptions) (*claims.Claims, error) {
				return tdx.Verify(ctx, ev, tdxOpts(o))
			}),
			claims.TEESGX: attest.CPUVerifierFunc(func(ctx context.Context, ev []byte, o attest.CPUOptions) (*claims.Claims, error) {
				so := sgx.Options(tdxOpts(o))
				return sgx.Verify(ctx, ev, so)
			}),
			claims.TEESEVSNP: attest.CPUVerifierFunc(func(ctx context.Context, ev []byte, o attest.CPUOptions) (*claims.Claims, error) {
				if o.SimulatedRoots != nil {
					return nil, fmt.Errorf("verifying SEV-SNP report: %w", attest.ErrUnknownTEE)
				}
				return snp.Verify(ctx, ev, snp.Options{Now: o.Now, CertChain: cfg.SNPCertChain, MinimumTCB: cfg.SNPMinimumTCB,
					CRLs: amdCRLs, RequireCRL: cfg.RequireRevocation, VCEKCandidates: vceks})
			}),
		},
		GPU: attest.GPUVerifierFunc(func(ctx context.Context, ev attest.GPUEvidence, o attest.GPUOptions) (*claims.GPU, error) {
			roots := cfg.NVIDIARoots
			if o.SimulatedRoots != nil {
				roots = pool(o.SimulatedRoots)
			}
			nonce := o.ExpectedNonce
			nev := nvidia.Evidence{Report: ev.Report, Chain: ev.CertChain, ExpectedNonce: nonce[:], Arch: ev.Arch}
			// The report does not carry the CC mode; the bundle does, bound
			// by the GPU evidence digest (attest.VerifyBundle sets the same
			// value again). Unreported is "unknown", never nvidia's default
			// "on".
			ccMode := ev.CCMode
			if ccMode == "" {
				ccMode = attest.CCModeUnknown
			}
			nopts := nvidia.Options{Roots: roots, RIMRoots: cfg.RIMRoots, RIMs: cfg.RIMs, Now: o.Now, ChainCache: chains, CCMode: ccMode,
				OCSPResponses: ocsp, RequireOCSP: cfg.RequireRevocation && o.SimulatedRoots == nil}
			if set != nil && len(cfg.RIMs) == 0 {
				nopts.RIMs = set.RIMsFor(ev.Report, ev.CertChain)
			}
			if o.SimulatedRoots != nil {
				// The chain cache keys on root identity; a per-bundle pool
				// would only fill it.
				nopts.ChainCache = nil
			}
			g, err := nvidia.Verify(ctx, nev, nopts)
			if errors.Is(err, nvidia.ErrNonceMismatch) {
				// Everything but the nonce may hold: verify without it so
				// the claims say exactly which check failed, and the
				// bundle layer reports a binding failure.
				nev.ExpectedNonce = nil
				if g, err = nvidia.Verify(ctx, nev, nopts); err == nil {
					g.NonceMatched = false
				}
			}
			if err != nil {
				return nil, fmt.Errorf("verifying GPU %d: %w", o.Index, err)
			}
			g.Index = o.Index
			return g, nil
		}),
		AllowSimulated:       cfg.AllowSimulated,
		PinnedSimulatedRoots: cfg.PinnedSimulatedRoots,
		MaxAge:               cfg.MaxAge,
		Now:                  cfg.Now,
	}
}

//go:embed roots/nvidia_device_identity_ca.pem
var nvidiaDeviceRootPEM []byte

//go:embed roots/nvidia_corim_signing_root_ca.pem
var nvidiaRIMRootPEM []byte

// NVIDIADeviceRoots is a pool holding the NVIDIA Device Identity CA.
func NVIDIADeviceRoots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(nvidiaDeviceRootPEM)
	return p
}

// NVIDIARIMRoots is a pool holding the NVIDIA CoRIM signing root.
func NVIDIARIMRoots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(nvidiaRIMRootPEM)
	return p
}
