// Package nvidia verifies NVIDIA GPU (Hopper, Blackwell) and NVSwitch
// confidential-computing attestation evidence in pure Go and turns it into
// claims.GPU.
//
// The evidence is an SPDM 1.1 (DMTF DSP0274) GET_MEASUREMENTS request
// followed by the signed MEASUREMENTS response, and the device certificate
// chain (leaf first, up to the NVIDIA Device Identity CA). Verify parses the
// report (ParseReport), verifies the chain to the caller's roots at the
// caller's time (with an optional ChainCache keyed by the chain's digest),
// checks the raw r||s ECDSA P-384 signature over SHA-384 of everything
// before it with the leaf key, the requester nonce against the expected
// one, and the FWID of NVIDIA's opaque data against the leaf's TCG DICE
// extension. Given reference integrity manifests (ParseRIM: SWID tags with
// an enveloped XML signature, verified with RIM.Verify to the CoRIM signing
// root), it compares the measurement blocks with the active reference
// values. ParseNVIDIAEvidenceJSON reads the evidence list NVIDIA's SDK
// serializes. Every failure wraps one sentinel of errors.go. No function
// performs I/O, reads a clock other than through Options.Now (zero means
// time.Now), or keeps global state; OCSP and CRL checks are left to the
// caller.
package nvidia
