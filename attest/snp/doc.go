// Package snp verifies AMD SEV-SNP attestation reports offline and turns
// them into normalized claims (DESIGN §3.4), using google/go-sev-guest for
// the report layout, the VCEK/VLEK certificate chain to the AMD ARK and the
// ECDSA P-384 report signature. Verify takes the raw report (optionally
// followed by the extended-request certificate table), the VCEK when the
// report does not carry it, and the trusted ASK/ARK (default: the AMD roots
// embedded in go-sev-guest); it never touches the network and builds with
// CGO_ENABLED=0. It establishes that the report is genuine and consistent
// with its VCEK; judging the measurement, debug bit and TCB level is left
// to policies. Every failure wraps one of the Err* sentinels. Importing
// go-sev-guest registers its command-line flags on the global FlagSet; this
// package never parses flags.
package snp
