// Package verifiers wires the per-TEE verifiers (attest/tdx, attest/sgx,
// attest/snp, attest/nvidia) into attest.VerifyOptions, so that every place
// that verifies evidence — the gateway's admission, the client SDK and the
// verify CLI — verifies it the same way. Pure Go; builds with CGO_ENABLED=0.
package verifiers
