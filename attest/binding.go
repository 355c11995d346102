package attest

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"time"
)

// Domain separation strings (DESIGN §3.1–§3.3). Each is hashed as its ASCII
// bytes with no terminator where every following field has a fixed length,
// and with a 0x00 terminator where a variable-length field follows.
const (
	DomainGPUNonce = "teegate/gpu/v1"
	DomainEvidence = "teegate/evidence/v2"
	DomainReceipt  = "teegate/receipt/v1"
	DomainBatch    = "teegate/batch/v2"
	DomainBundle   = "teegate/bundle/v1"
)

// Fixed key and nonce sizes.
const (
	SigningKeySize = 32 // Ed25519 public key
	HPKEKeySize    = 32 // X25519 public key (DHKEM(X25519, HKDF-SHA256))
	NonceSize      = 32 // epoch nonce
)

// GPUNonce is the nonce every GPU report of a bundle must carry:
// SHA-256("teegate/gpu/v1" || signing_pub || epoch_nonce). It ties each GPU
// report to the key and epoch before the CPU evidence exists.
func GPUNonce(signingPub []byte, epochNonce [32]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(DomainGPUNonce))
	h.Write(signingPub)
	h.Write(epochNonce[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// GPUEvidenceDigest is SHA-256 over all GPU evidence of a bundle, in bundle
// order:
//
//	u32be(count) || for each GPU:
//	  u32be(len(arch)) || arch || u32be(len(cc_mode)) || cc_mode ||
//	  u32be(len(report)) || report || u32be(len(cert_chain)) || cert_chain
//
// Length prefixes make the concatenation unambiguous, so no two different
// GPU lists share a digest input; an unreported cc_mode is the empty string
// (length 0), so every GPU has the same four fields. cc_mode is in the
// digest because the GPU report does not carry it: through the report data
// the CPU evidence then vouches for the mode the TEE read from the driver.
func GPUEvidenceDigest(gpus []GPUEvidence) [32]byte {
	h := sha256.New()
	var n [4]byte
	put := func(b []byte) {
		binary.BigEndian.PutUint32(n[:], uint32(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	binary.BigEndian.PutUint32(n[:], uint32(len(gpus)))
	h.Write(n[:])
	for _, g := range gpus {
		put([]byte(g.Arch))
		put([]byte(g.CCMode))
		put(g.Report)
		put(g.CertChain)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// ReportData is the 64-byte value the CPU evidence must carry:
// SHA-512("teegate/evidence/v2" || signing_pub || hpke_pub ||
// gpu_evidence_digest || epoch_nonce || u64be(not_before) ||
// u64be(not_after) || u64be(grace_seconds)), the times in Unix seconds.
// Every input has a fixed size (32 bytes each, then 8 bytes each), so no
// separators are needed. The epoch window is in it so that the hardware
// evidence, not only the key's own signature, vouches for when the key may
// sign (docs/attestation.md §3).
func ReportData(signingPub, hpkePub []byte, gpuEvidenceDigest, epochNonce [32]byte, epoch EpochWindow) [64]byte {
	h := sha512.New()
	h.Write([]byte(DomainEvidence))
	h.Write(signingPub)
	h.Write(hpkePub)
	h.Write(gpuEvidenceDigest[:])
	h.Write(epochNonce[:])
	h.Write(epochWindowBytes(epoch))
	var out [64]byte
	h.Sum(out[:0])
	return out
}

// BatchNonce is the epoch nonce of a fresh-mode bundle that commits to a
// batch of receipts, an RFC 6962-style tree head: SHA-256("teegate/batch/v2"
// || u64be(tree_size) || merkle_root). Through ReportData, the CPU evidence
// of that bundle then commits to the size and the root, and with the size
// fixed an inclusion proof also fixes the leaf's index
// (docs/attestation.md §9.3).
func BatchNonce(treeSize uint64, root [32]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(DomainBatch))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], treeSize)
	h.Write(n[:])
	h.Write(root[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// epochWindowBytes is the window as ReportData hashes it: u64be of
// not_before and not_after in Unix seconds, then of grace_seconds.
func epochWindowBytes(w EpochWindow) []byte {
	b := make([]byte, 0, 24)
	b = binary.BigEndian.AppendUint64(b, uint64(w.NotBefore.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(w.NotAfter.Unix()))
	return binary.BigEndian.AppendUint64(b, uint64(w.Grace/time.Second))
}
