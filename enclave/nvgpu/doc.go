// Package nvgpu produces NVIDIA GPU confidential-computing evidence inside
// the confidential VM through NVML (NVIDIA/go-nvml): for every GPU, an
// attestation report (SPDM GET_MEASUREMENTS request and signed response)
// over the caller's 32-byte nonce, and the GPU's attestation certificate
// chain, plus the system CC state (CC feature, environment, devtools mode,
// GPUs-ready state). NVML is loaded at run time; on a machine without the
// driver Init fails, and NVML aborts the process if any other function is
// called after that, so Open stops at the first failed Init, and symbols
// that older drivers lack are looked up before they are called. All NVML
// calls sit behind a small interface (nvmlAPI) whose only real
// implementation needs cgo and Linux; other builds (CGO_ENABLED=0) get a
// stub whose Open fails with ErrUnsupported, so the verifier side builds
// without cgo. GPUs is an enclave.GPUSource; it checks that each report
// parses and carries exactly the nonce asked for. Probe and WriteProbe
// report the CC state and GPUs for `teegate probe gpu`. Verification lives
// in attest/nvidia; this package never verifies.
package nvgpu
