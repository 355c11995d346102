// Package simtdx produces TDX v4 quotes for the simulated TEE. The quotes
// use the real format, so attest/tdx verifies them with the same code as
// hardware quotes, but everything chains to a simulated root CA the caller
// generates: root -> simulated PCK CA -> simulated PCK certificate (with an
// SGX extension carrying a made-up FMSPC) -> QE report -> attestation key ->
// quote. Verified against the Intel root they fail with tdx.ErrPCKChain;
// verified against the simulated root they pass, and the bundle layer
// labels the claims simulated. Measurements default to obviously synthetic
// values (SHA-384 of "teegate simulated <name>"). Not for production
// binaries: link it only into simulated builds.
package simtdx
