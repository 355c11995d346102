package nvidia

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/teegate/teegate/attest/claims"
)

// Claim values of claims.GPU.MeasurementsMatched.
const (
	MeasurementsMatch      = "match"
	MeasurementsMismatch   = "mismatch"
	MeasurementsNotChecked = "not_checked"
)

// Evidence is one GPU's (or NVSwitch's) attestation evidence.
type Evidence struct {
	// Report is the attestation report: GET_MEASUREMENTS request followed
	// by the signed MEASUREMENTS response, as NVML returns it.
	Report []byte
	// Chain is the device certificate chain in PEM, leaf first.
	Chain []byte
	// ExpectedNonce is the 32-byte nonce the report must carry (the binding
	// layer derives it). Nil skips the check and leaves NonceMatched false.
	ExpectedNonce []byte
	// Arch is an optional, unauthenticated architecture name from the
	// transport (NVIDIA's JSON "arch": HOPPER, BLACKWELL, LS10). When set it
	// must agree with the leaf certificate.
	Arch string
	// ClaimedNonce is the nonce NVIDIA's evidence JSON lists next to the
	// report. It is informational: Verify never reads it.
	ClaimedNonce []byte
}

// Options configure Verify.
type Options struct {
	// Roots are the trusted device identity roots: the NVIDIA Device
	// Identity CA, or a simulated root.
	Roots *x509.CertPool
	// RIMRoots are the trusted RIM signing roots (the NVIDIA CoRIM signing
	// root). Required when RIMs is not empty.
	RIMRoots *x509.CertPool
	// RIMs are the reference manifests to compare with: for a GPU its
	// driver RIM and its VBIOS RIM, for an NVSwitch its BIOS RIM. Each must
	// name the report's driver or VBIOS version. Verify verifies each one
	// (once per root pool, see RIM.Verify).
	RIMs []*RIM
	// Now is the verification time; zero means time.Now().
	Now time.Time
	// ChainCache, when set, skips re-verifying chains seen before.
	ChainCache *ChainCache
	// CCMode is copied to the claims; empty means "on". The report does not
	// carry the CC mode: the producer reads it from NVML and the binding
	// layer passes it on.
	CCMode string
	// OCSPResponses are DER OCSP responses for the device chain's
	// certificates (collateral, fetched beforehand); each certificate but
	// the root and the device-issued leaf that has one is checked with it
	// (CheckOCSP). RequireOCSP fails when one has none.
	OCSPResponses [][]byte
	RequireOCSP   bool
	// AllowCertificateHold accepts an OCSP certificateHold status.
	AllowCertificateHold bool
	// RequireMeasurementMatch turns a measurement mismatch into an error
	// (a *MeasurementMismatchError, returned with the claims). By default a
	// mismatch is only reported in the claims, for the policy to judge.
	RequireMeasurementMatch bool
}

// Verify verifies one GPU's evidence and returns its claims. It checks, in
// order: the report's structure, the certificate chain to opts.Roots at
// opts.Now, its revocation by OCSP when responses are given, the report signature (ECDSA P-384, SHA-384 over everything but
// the signature) with the leaf key, the nonce, the FWID against the leaf's
// DICE extension, the architecture hint, and, when RIMs are given, the RIM
// signatures and the measurements. Any failure returns a nil claims and an
// error wrapping one of this package's sentinels; the one exception is a
// measurement mismatch under RequireMeasurementMatch, which returns the
// claims (MeasurementsMatched "mismatch") together with the error.
// claims.GPU.Index is left zero for the caller to set. Measurements are
// keyed by SPDM block index ("1".."64" on Hopper). Arch comes from the leaf
// certificate and is only as trustworthy as opts.Roots: the caller decides
// from the root pool it passed whether the evidence is simulated.
func Verify(ctx context.Context, ev Evidence, opts Options) (*claims.GPU, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	rep, err := ParseReport(ev.Report)
	if err != nil {
		return nil, fmt.Errorf("parsing GPU report: %w", err)
	}
	leaf, err := verifiedLeaf(ev.Chain, opts.Roots, now, opts.ChainCache)
	if err != nil {
		return nil, fmt.Errorf("verifying GPU certificate chain: %w", err)
	}
	if err := CheckOCSP(leaf.path, true, OCSPOptions{Responses: opts.OCSPResponses, Now: now,
		Require: opts.RequireOCSP, AllowHold: opts.AllowCertificateHold}); err != nil {
		return nil, fmt.Errorf("checking GPU certificate revocation: %w", err)
	}
	if err := verifyReportSignature(rep, leaf.key); err != nil {
		return nil, fmt.Errorf("verifying GPU report: %w", err)
	}

	nonceMatched := false
	if ev.ExpectedNonce != nil {
		n := rep.Nonce()
		if !bytes.Equal(n[:], ev.ExpectedNonce) {
			return nil, fmt.Errorf("checking GPU nonce: %w", ErrNonceMismatch)
		}
		nonceMatched = true
	}
	fwid := rep.FWID()
	if fwid != nil && !bytes.Equal(fwid, leaf.fwid) {
		return nil, fmt.Errorf("checking GPU FWID: %w", ErrFWIDMismatch)
	}
	if ev.Arch != "" && archFromHint(ev.Arch) != leaf.arch {
		return nil, fmt.Errorf("checking GPU architecture: %w: evidence says %q, certificate says %q", ErrArchMismatch, ev.Arch, leaf.arch)
	}

	g := &claims.GPU{
		Arch:                leaf.arch,
		CCMode:              opts.CCMode,
		DriverVersion:       rep.DriverVersion(),
		VBIOSVersion:        rep.VBIOSVersion(),
		SignatureValid:      true,
		ChainValid:          true,
		NonceMatched:        nonceMatched,
		MeasurementsMatched: MeasurementsNotChecked,
		Measurements:        make(map[string]string, len(rep.Blocks)),
		FWID:                hex.EncodeToString(fwid),
	}
	if g.CCMode == "" {
		g.CCMode = "on"
	}
	for _, b := range rep.Blocks {
		g.Measurements[strconv.Itoa(int(b.Index))] = hex.EncodeToString(b.Value)
	}
	if len(opts.RIMs) == 0 {
		return g, nil
	}

	covered, err := checkRIMs(rep, leaf.arch, opts, now)
	if err != nil {
		return nil, err
	}
	err = CompareMeasurements(rep, opts.RIMs...)
	var mm *MeasurementMismatchError
	switch {
	case errors.As(err, &mm):
		g.MeasurementsMatched = MeasurementsMismatch
		if opts.RequireMeasurementMatch {
			return g, fmt.Errorf("comparing GPU measurements: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("comparing GPU measurements: %w", err)
	case covered:
		g.MeasurementsMatched = MeasurementsMatch
	}
	return g, nil
}

// checkRIMs verifies each RIM and that it describes this report (its
// version is the report's driver or VBIOS version). It reports whether the
// RIMs cover the device: driver and VBIOS for a GPU, BIOS for an NVSwitch.
// Anything less yields "not_checked" even when all given values match.
func checkRIMs(rep *Report, arch string, opts Options, now time.Time) (bool, error) {
	driver, vbios := rep.DriverVersion(), rep.VBIOSVersion()
	var haveDriver, haveVBIOS bool
	for i, rim := range opts.RIMs {
		if rim == nil {
			return false, fmt.Errorf("checking RIMs: %w: RIM %d is nil", ErrRIMFormat, i)
		}
		path, err := rim.ensureVerified(opts.RIMRoots, now)
		if err != nil {
			return false, fmt.Errorf("verifying RIM %d: %w", i, err)
		}
		// RIM signer chains are checked from the signer up (NVIDIA's SDK
		// does the same); only the device chain skips its leaf.
		if err := CheckOCSP(path, false, OCSPOptions{Responses: opts.OCSPResponses, Now: now,
			Require: opts.RequireOCSP, AllowHold: opts.AllowCertificateHold}); err != nil {
			return false, fmt.Errorf("checking RIM %d signer revocation: %w", i, err)
		}
		switch {
		case driver != "" && rim.Version == driver:
			haveDriver = true
		case vbios != "" && strings.EqualFold(rim.Version, vbios):
			haveVBIOS = true
		default:
			return false, fmt.Errorf("checking RIM %d: %w: RIM %q, report driver %q, VBIOS %q", i, ErrRIMVersion, rim.Version, driver, vbios)
		}
	}
	if arch == ArchNVSwitch {
		return haveVBIOS, nil
	}
	return haveDriver && haveVBIOS, nil
}

// verifiedLeaf returns the verified chain's leaf information, from the
// cache when possible.
func verifiedLeaf(chainPEM []byte, roots *x509.CertPool, now time.Time, cache *ChainCache) (*leafInfo, error) {
	key := chainKey{digest: sha256.Sum256(chainPEM), roots: roots}
	if li := cache.get(key, now); li != nil {
		return li, nil
	}
	certs, err := ParseCertChain(chainPEM)
	if err != nil {
		return nil, err
	}
	path, err := verifyChain(certs, roots, now, ErrCertChain)
	if err != nil {
		return nil, err
	}
	li, err := leafFromPath(path)
	if err != nil {
		return nil, err
	}
	cache.put(key, li)
	return li, nil
}

func verifyReportSignature(r *Report, key *ecdsa.PublicKey) error {
	sum := sha512.Sum384(r.SignedBytes())
	rr := new(big.Int).SetBytes(r.Signature[:SignatureSize/2])
	ss := new(big.Int).SetBytes(r.Signature[SignatureSize/2:])
	if !ecdsa.Verify(key, sum[:], rr, ss) {
		return ErrReportSignature
	}
	return nil
}
