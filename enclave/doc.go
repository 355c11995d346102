// Package enclave produces attestation evidence inside the TEE (DESIGN §2,
// §3). An Attester is one machine's evidence source: GPU reports over a
// nonce, then CPU evidence over report data. The Keeper owns the worker's
// key epochs: for each epoch it generates an Ed25519 signing key and an
// X25519 HPKE key inside the TEE, binds them into a fresh evidence bundle
// through attest.GPUNonce and attest.ReportData, rotates on a schedule and
// keeps the previous epoch usable for a grace period so that receipts in
// flight still verify. Private keys stay in this package: callers get
// signatures and decryptions, never key bytes. The Batcher implements fresh
// mode: it gathers receipt leaves for a short window and covers them with one
// quote over their Merkle root. The simulated TEE lives in enclave/sim and is
// for development only.
package enclave
