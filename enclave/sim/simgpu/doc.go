// Package simgpu is the GPU of the simulated TEE: it produces attestation
// evidence in exactly NVIDIA's format, so the production verifier
// (attest/nvidia) checks it with the same code. A GPU holds a fresh P-384
// key certified by a 5-certificate chain shaped like NVIDIA's (leaf "FMC
// LF", "BROM", "Provisioner ICA 1", "Identity", root) under a simulated root
// the caller provides (NewRoot makes one); Report returns an SPDM 1.1
// GET_MEASUREMENTS request plus signed MEASUREMENTS response for a nonce,
// with NVIDIA-style opaque data whose driver and VBIOS versions and chip
// name are plainly synthetic, so claims derived from it always read
// arch "simulated". It never touches hardware, reads no clock, and is
// dev/test code: production verifiers trust only NVIDIA's root, under
// which this evidence fails with nvidia.ErrCertChain.
package simgpu
