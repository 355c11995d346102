// Package collateral reads and writes the collateral directory an offline
// (air-gapped) verifier works from, and fetches it from the vendors'
// services while online: Intel PCS TCB info, QE identity and CRLs; AMD KDS
// certificate chains and CRLs; NVIDIA OCSP responses for device
// certificates; NVIDIA reference integrity manifests (RIMs) from the RIM
// service. Load never touches the network; Fetcher is the only part that
// does, through the http.Client it is given. The layout is documented in
// docs/attestation.md §14.5 and mirrors the vendors' URL paths so that an
// auditor can see where each file came from.
//
// Loading checks format only. Freshness is checked at verification time by
// the vendor verifiers, each with a named error: pcs.ErrCollateralExpired
// (Intel nextUpdate), snp.ErrCRLExpired (AMD CRL nextUpdate),
// nvidia.ErrOCSPStale (OCSP nextUpdate).
package collateral
