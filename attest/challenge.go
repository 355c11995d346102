package attest

import "crypto/sha256"

// DomainChallenge separates on-demand evidence nonces from every other hash.
const DomainChallenge = "teegate/challenge/v1"

// ChallengeNonce is the epoch nonce of a bundle produced on demand for a
// client's nonce (GET /v1/attestation?nonce=N): SHA-256("teegate/challenge/v1"
// || N), N being the nonce string's bytes exactly as sent. A verifier checks
// the bundle's epoch nonce against it to know the evidence was produced after
// it chose N.
func ChallengeNonce(n string) [32]byte {
	h := sha256.New()
	h.Write([]byte(DomainChallenge))
	h.Write([]byte(n))
	var out [32]byte
	h.Sum(out[:0])
	return out
}
