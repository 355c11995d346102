// Package pcs holds Intel's attestation collateral and the checks shared by
// the SGX and TDX ECDSA quote verifiers: the Intel SGX Root CA, the PCK
// certificate and its SGX extensions, TCB info (v2/v3, SGX and TDX), QE
// identity (v2), CRLs, TCB level matching, and the signature-part checks
// common to SGX v3 and TDX v4/v5 quotes (PCK chain, QE report signature,
// attestation-key binding, quote signature) with the QE report certification
// data layout they share. Collateral comes from an offline
// file (LoadCollateralFile, CollateralFromPCS) or a Getter such as HTTPGetter,
// which fetches from an Intel PCS or a PCCS and caches until the collateral's
// next update. Everything is pure Go; the clock is always passed in. Every
// failure wraps one of the sentinel errors below so callers can tell exactly
// which check failed with errors.Is.
package pcs
