// Package merkle implements the Merkle tree of RFC 6962 §2.1 (identical in
// RFC 9162 §2.1): leaf hash SHA-256(0x00 || data), interior node
// SHA-256(0x01 || left || right), the largest-power-of-two split for trees
// whose size is not a power of two, and audit (inclusion) proofs. teegate
// uses it in fresh mode to commit one hardware quote to a batch of receipts
// (docs/attestation.md). Pure Go, no allocation beyond the tree itself.
package merkle
