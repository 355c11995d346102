package nvidia

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// the "kind" sentinels below (ErrCertExpired is wrapped in addition to the
// chain error it qualifies), so callers and tests can branch with errors.Is.
var (
	// ErrReportFormat: the attestation report is not a well-formed SPDM
	// GET_MEASUREMENTS request followed by its MEASUREMENTS response.
	ErrReportFormat = errors.New("malformed GPU attestation report")
	// ErrReportSignature: the report's ECDSA P-384 signature does not verify
	// with the leaf certificate's key.
	ErrReportSignature = errors.New("GPU attestation report signature invalid")
	// ErrCertFormat: the certificate chain is not a PEM sequence of X.509
	// certificates, or its leaf does not carry a P-384 key.
	ErrCertFormat = errors.New("malformed GPU certificate chain")
	// ErrCertChain: the GPU certificate chain does not verify to a trusted
	// root.
	ErrCertChain = errors.New("GPU certificate chain invalid")
	// ErrCertExpired: a certificate (of the GPU chain or of a RIM signer
	// chain) is outside its validity period at the verification time. It is
	// always wrapped together with ErrCertChain or ErrRIMChain.
	ErrCertExpired = errors.New("certificate outside its validity period")
	// ErrFWIDMismatch: the FWID in the report's opaque data differs from the
	// FWID in the leaf certificate's TCG DICE extension.
	ErrFWIDMismatch = errors.New("GPU FWID does not match the leaf certificate")
	// ErrNonceMismatch: the nonce in the report's GET_MEASUREMENTS request
	// is not the expected one.
	ErrNonceMismatch = errors.New("GPU report nonce mismatch")
	// ErrArchMismatch: the architecture named next to the evidence differs
	// from the one the leaf certificate names.
	ErrArchMismatch = errors.New("GPU architecture mismatch")
	// ErrEvidenceFormat: NVIDIA evidence JSON is malformed.
	ErrEvidenceFormat = errors.New("malformed NVIDIA evidence JSON")
	// ErrRIMFormat: a reference integrity manifest is not a well-formed
	// NVIDIA SWID tag with one enveloped XML signature.
	ErrRIMFormat = errors.New("malformed RIM")
	// ErrRIMSignature: the RIM's reference digest or its signature value
	// does not verify.
	ErrRIMSignature = errors.New("RIM signature invalid")
	// ErrRIMChain: the RIM signer's certificate chain does not verify to a
	// trusted RIM root.
	ErrRIMChain = errors.New("RIM certificate chain invalid")
	// ErrRIMVersion: a RIM given for comparison names neither the report's
	// driver version nor its VBIOS version.
	ErrRIMVersion = errors.New("RIM version does not match the report")
	// ErrRIMConflict: two RIMs hold an active measurement at the same index.
	ErrRIMConflict = errors.New("RIMs conflict")
	// ErrCertRevoked: an OCSP response says a certificate of the chain is
	// revoked (certificateHold included unless allowed).
	ErrCertRevoked = errors.New("GPU certificate revoked")
	// ErrOCSP: an OCSP response is malformed, not for the certificate, not
	// signed by a trusted responder, says "unknown", or is missing while
	// required.
	ErrOCSP = errors.New("GPU certificate OCSP check failed")
	// ErrOCSPStale: an OCSP response is past its nextUpdate (or before its
	// thisUpdate, or has none) at the verification time: stale collateral.
	ErrOCSPStale = errors.New("GPU certificate OCSP response is stale")
	// ErrMeasurementMismatch: a report measurement matches none of the
	// alternatives of the active reference measurement at its index.
	ErrMeasurementMismatch = errors.New("GPU measurements do not match the RIMs")
)

// MeasurementMismatchError lists the measurement blocks that did not match.
// It matches ErrMeasurementMismatch with errors.Is.
type MeasurementMismatchError struct {
	// Blocks are SPDM measurement block indexes (1-based, as in the
	// report; a RIM's index attribute is the block index minus one).
	Blocks []int
}

func (e *MeasurementMismatchError) Error() string {
	return fmt.Sprintf("%s at measurement blocks %v", ErrMeasurementMismatch, e.Blocks)
}

// Is reports whether target is ErrMeasurementMismatch.
func (e *MeasurementMismatchError) Is(target error) bool { return target == ErrMeasurementMismatch }
