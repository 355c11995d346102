// Package sim is the simulated TEE, for development and tests only. It is
// honest about itself: its root CA says "teegate SIMULATED root — not for
// production", every bundle it produces carries that root, and verifiers
// label the resulting claims TEE "simulated", which production policies
// reject. It produces real-format evidence — TDX v4 quotes through
// enclave/sim/simtdx and NVIDIA SPDM GPU reports through enclave/sim/simgpu —
// so the production verifiers run unchanged against it. The root is the
// simulated machine's fused key: generated on first start and persisted in a
// directory the caller chooses (certificate and 0600 private key, PEM). A
// configurable delay per quote imitates real quote latency so fresh-mode
// batching is measured honestly. Link it only into development builds.
package sim
