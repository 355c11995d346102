// Package sgx parses and verifies Intel SGX DCAP ECDSA quotes (version 3)
// and Open Enclave / EGo remote reports (an OE header wrapping such a
// quote), in pure Go. Verify checks the PCK chain to the trusted roots (the
// Intel SGX Root CA by default), the QE report signature, the attestation
// key binding and the quote signature over the ISV enclave report; with
// collateral (offline or from a pcs.Getter) it also checks TCB info, QE
// identity and CRLs and reports the TCB status. The result is normalized
// claims (tee "sgx"). Every failure wraps a pcs sentinel error, re-exported
// here. Layouts follow Intel's "SGX ECDSA Quote Library API", Appendix A.4.
package sgx
