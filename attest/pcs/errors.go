package pcs

import "errors"

// Sentinel errors. The tdx and sgx packages re-export them so that a caller
// checks one name whichever verifier produced the failure.
var (
	// ErrQuoteFormat: the quote (or report) bytes do not follow the layout.
	ErrQuoteFormat = errors.New("malformed quote")
	// ErrUnsupportedVersion: a quote version, key type or body type this
	// verifier does not handle.
	ErrUnsupportedVersion = errors.New("unsupported quote version")
	// ErrQuoteSignature: the attestation key did not sign the header and body.
	ErrQuoteSignature = errors.New("quote signature invalid")
	// ErrAttestationKeyBinding: the QE report data is not
	// SHA-256(attestation key || QE auth data) || 32 zero bytes.
	ErrAttestationKeyBinding = errors.New("attestation key not bound to QE report")
	// ErrQEReportSignature: the PCK key did not sign the QE report.
	ErrQEReportSignature = errors.New("QE report signature invalid")
	// ErrPCKChain: the PCK certificate chain is missing, malformed, or does
	// not verify to a trusted root at the verification time.
	ErrPCKChain = errors.New("PCK certificate chain invalid")
	// ErrCollateralFormat: collateral bytes could not be parsed or a
	// required part is missing.
	ErrCollateralFormat = errors.New("malformed collateral")
	// ErrCollateralSignature: a TCB info, QE identity or CRL signature, or
	// its issuer chain, does not verify.
	ErrCollateralSignature = errors.New("collateral signature invalid")
	// ErrCollateralExpired: the collateral is not valid at the verification
	// time (nextUpdate passed, issueDate in the future, signer expired).
	ErrCollateralExpired = errors.New("collateral expired")
	// ErrCollateralMismatch: the collateral was issued for another TEE kind
	// or PCE.
	ErrCollateralMismatch = errors.New("collateral does not match the quote")
	// ErrCollateralUnavailable: the Getter could not provide collateral.
	ErrCollateralUnavailable = errors.New("collateral unavailable")
	// ErrFMSPCMismatch: the TCB info is for another platform model.
	ErrFMSPCMismatch = errors.New("FMSPC mismatch")
	// ErrQEIdentityMismatch: the QE report does not match the QE identity.
	ErrQEIdentityMismatch = errors.New("QE identity mismatch")
	// ErrTDXModuleMismatch: MRSIGNERSEAM/SEAM attributes or the TDX module
	// version do not match the TCB info's TDX module identities.
	ErrTDXModuleMismatch = errors.New("TDX module mismatch")
	// ErrTCBNotSupported: no TCB level of the collateral matches the
	// platform (older than every level Intel lists).
	ErrTCBNotSupported = errors.New("TCB level not supported")
	// ErrTCBRevoked: the matched TCB level (platform, TDX module or QE) is
	// revoked.
	ErrTCBRevoked = errors.New("TCB revoked")
	// ErrCertificateRevoked: a certificate is listed in a CRL.
	ErrCertificateRevoked = errors.New("certificate revoked")
)
