package tdx

import "github.com/teegate/teegate/attest/pcs"

// Errors a verification can wrap; they are the pcs sentinels, so errors.Is
// works with either name.
var (
	ErrQuoteFormat           = pcs.ErrQuoteFormat
	ErrUnsupportedVersion    = pcs.ErrUnsupportedVersion
	ErrQuoteSignature        = pcs.ErrQuoteSignature
	ErrAttestationKeyBinding = pcs.ErrAttestationKeyBinding
	ErrQEReportSignature     = pcs.ErrQEReportSignature
	ErrPCKChain              = pcs.ErrPCKChain
	ErrCollateralFormat      = pcs.ErrCollateralFormat
	ErrCollateralSignature   = pcs.ErrCollateralSignature
	ErrCollateralExpired     = pcs.ErrCollateralExpired
	ErrCollateralMismatch    = pcs.ErrCollateralMismatch
	ErrCollateralUnavailable = pcs.ErrCollateralUnavailable
	ErrFMSPCMismatch         = pcs.ErrFMSPCMismatch
	ErrQEIdentityMismatch    = pcs.ErrQEIdentityMismatch
	ErrTDXModuleMismatch     = pcs.ErrTDXModuleMismatch
	ErrTCBNotSupported       = pcs.ErrTCBNotSupported
	ErrTCBRevoked            = pcs.ErrTCBRevoked
	ErrCertificateRevoked    = pcs.ErrCertificateRevoked
)
