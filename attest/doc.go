// Package attest defines teegate's evidence and receipt formats and verifies
// them (DESIGN §3; the normative spec is docs/attestation.md). An evidence
// Bundle carries a worker's CPU evidence, GPU evidence and the public keys
// born in its TEE; its id is the SHA-256 of its canonical (RFC 8785) bytes.
// GPUNonce and ReportData are the one place the key binding is computed.
// VerifyBundle dispatches the CPU and GPU evidence to verifiers registered
// in VerifyOptions (the per-TEE packages under attest/ provide them), then
// checks the binding and returns normalized claims; simulated bundles are
// accepted only when asked for and are always reported as simulated. Signed
// receipts tie the exact request and response bytes of one completion to a
// bundle's signing key; VerifyReceipt checks them, including the Merkle
// batch proof of fresh mode. Pure Go, no cgo, no I/O beyond what callers
// pass in; private keys never enter this package.
package attest
