// Package snp verifies AMD SEV-SNP attestation reports offline and turns
// them into normalized claims (DESIGN §3.4). It uses go-sev-guest's abi and
// kds packages for the report layout and the VCEK/VLEK extensions, and Go's
// crypto/x509 for the rest: the VCEK chain through the ASK (or the VLEK
// chain through the ASVK) to the ARK, the AMD CRL of the ARK, and the ECDSA
// P-384 report signature. Verify takes the raw report (optionally followed
// by the extended-request certificate table), the VCEK/VLEK when the report
// does not carry it, the trusted chain (default: the AMD VCEK and VLEK
// chains of Milan, Genoa and Turin embedded in roots/), CRLs, and the
// minimum TCB per product line against which it derives the TCB status
// (Unknown without one, never UpToDate by default). It never touches the
// network, builds with CGO_ENABLED=0, and links nothing that registers
// flags or reads the environment at init (go-sev-guest's verify, validate
// and trust packages are deliberately not used). Judging the measurement
// and the debug bit is left to policies. Every failure wraps one of the
// Err* sentinels.
package snp
