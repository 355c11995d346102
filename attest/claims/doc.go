// Package claims defines the normalized claims that verifiers produce from
// attestation evidence (DESIGN §3.4) and that policies evaluate. It is a leaf
// package: the per-TEE verifiers under attest/ fill it, policies/ reads it as
// JSON input, and nothing here verifies anything.
package claims
