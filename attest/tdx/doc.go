// Package tdx parses and verifies Intel TDX ECDSA quotes, versions 4 and 5
// (TDX 1.0 and 1.5 TD report bodies), in pure Go. Verify checks the PCK
// chain to the trusted roots (the Intel SGX Root CA by default), the QE
// report signature, the binding of the attestation key into the QE report,
// and the quote signature; with collateral (offline or from a pcs.Getter) it
// also checks the TCB info, QE identity, CRLs and TDX module, and reports
// the TCB status. The result is normalized claims (tee "tdx"). Every
// failure wraps one of the exported sentinel errors, shared with package
// pcs. Layouts follow Intel's "TDX DCAP Quoting Library API", Appendix A.3.
package tdx
