// Package workernode assembles the worker side of teegate: a key keeper
// over the TEE's attester that rotates epochs in the background, and a
// worker serving one engine that connects by its evidence (or, without an
// attester, on a connection with static credentials). `teegate worker`,
// the measured teegate-worker binary and `teegate dev` all build their
// workers here; wiring (flags, env, which attester) stays in cmd/. It
// links no simulated TEE and no embedded server: the measured binary uses
// it (cmd/teegate-worker/deps_test.go).
package workernode
