package attest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/teegate/teegate/attest/merkle"
)

// ReceiptVersion is the only receipt version this package signs and accepts.
const ReceiptVersion = 1

// HTTP headers and SSE members that carry receipts and evidence.
const (
	// HeaderReceipt carries SignedReceipt.HeaderValue on non-stream
	// responses.
	HeaderReceipt = "Teegate-Receipt"
	// HeaderEvidenceID carries the id of the bundle that signed the
	// response (also inside the receipt), so clients can prefetch it.
	HeaderEvidenceID = "Teegate-Evidence-Id"
	// ChunkReceiptMember is the member of the final SSE chunk holding the
	// signed receipt; ChunkEvidenceMember optionally holds an inline bundle.
	ChunkReceiptMember  = "teegate_receipt"
	ChunkEvidenceMember = "teegate_evidence"
)

const (
	maxReceiptString = 256
	maxSafeInt       = 1<<53 - 1
	// MaxReceiptSize bounds anything ParseReceipt reads (an inline bundle
	// may ride along in an SSE chunk).
	MaxReceiptSize = MaxBundleSize + 64<<10
)

// Usage is the token accounting of one completion.
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
}

// Valid reports whether every counter is in the range a receipt can carry,
// [0, 2^53-1] (docs/attestation.md §1). A producer reading counters from an
// engine should drop usage that is not valid rather than fail to sign.
func (u Usage) Valid() bool {
	for _, n := range [...]int64{u.PromptTokens, u.CompletionTokens, u.TotalTokens} {
		if n < 0 || n > maxSafeInt {
			return false
		}
	}
	return true
}

// Receipt is the signed statement about one completion (DESIGN §3.2).
type Receipt struct {
	Version   int
	RequestID string
	// EvidenceID is the id of the bundle whose signing key signs this
	// receipt (lowercase hex).
	EvidenceID string
	Model      string
	// RequestSHA256 is SHA-256 of the request body bytes as the client
	// sent them.
	RequestSHA256 [32]byte
	// ResponseSHA256 is SHA-256 of the response body (Stream false) or
	// the stream digest of StreamHasher (Stream true).
	ResponseSHA256 [32]byte
	Stream         bool
	// Nonce is the client's nonce, empty when none was sent.
	Nonce   string
	Created time.Time
	Usage   Usage
}

// BatchProof places a receipt in a fresh-mode batch: the receipt's leaf
// (LeafHash of its signing input) is at LeafIndex in a Merkle tree of
// TreeSize leaves with root Root, and the bundle EvidenceID has epoch nonce
// BatchNonce(Root). It sits outside the signed body.
type BatchProof struct {
	EvidenceID string
	LeafIndex  uint64
	TreeSize   uint64
	Proof      [][32]byte
	Root       [32]byte
}

// SignedReceipt is a receipt, its Ed25519 signature and, in fresh mode, the
// batch proof.
type SignedReceipt struct {
	Receipt   Receipt
	Signature []byte
	Batch     *BatchProof
}

// Validate checks the receipt's schema constraints.
func (r *Receipt) Validate() error {
	switch {
	case r.Version != ReceiptVersion:
		return fmt.Errorf("receipt version %d: %w", r.Version, ErrUnsupportedVersion)
	case r.RequestID == "" || len(r.RequestID) > maxReceiptString:
		return fmt.Errorf("request_id length %d: %w", len(r.RequestID), ErrMalformed)
	case !isHexID(r.EvidenceID):
		return fmt.Errorf("evidence_id not 64 lowercase hex digits: %w", ErrMalformed)
	case len(r.Model) > maxReceiptString:
		return fmt.Errorf("model length %d: %w", len(r.Model), ErrMalformed)
	case len(r.Nonce) > maxReceiptString:
		return fmt.Errorf("nonce length %d: %w", len(r.Nonce), ErrMalformed)
	case r.Created.IsZero() || r.Created.Year() < 2000 || r.Created.Year() > 9999:
		return fmt.Errorf("created out of range: %w", ErrMalformed)
	}
	if !r.Usage.Valid() {
		return fmt.Errorf("usage out of range: %w", ErrMalformed)
	}
	return nil
}

func isHexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// AppendCanonical appends the receipt body's canonical (RFC 8785) encoding,
// members in sorted order: created, evidence_id, model, nonce (omitted when
// empty), request_id, request_sha256, response_sha256, stream,
// usage[completion_tokens, prompt_tokens, total_tokens], version.
func (r *Receipt) AppendCanonical(dst []byte) []byte {
	dst = append(dst, '{')
	dst = appendKey(dst, "created", true)
	// The timestamp never needs escaping, so it is formatted in place.
	dst = append(dst, '"')
	dst = r.Created.UTC().AppendFormat(dst, TimeLayout)
	dst = append(dst, '"')
	dst = appendKey(dst, "evidence_id", false)
	dst = appendJSONString(dst, r.EvidenceID)
	dst = appendKey(dst, "model", false)
	dst = appendJSONString(dst, r.Model)
	if r.Nonce != "" {
		dst = appendKey(dst, "nonce", false)
		dst = appendJSONString(dst, r.Nonce)
	}
	dst = appendKey(dst, "request_id", false)
	dst = appendJSONString(dst, r.RequestID)
	dst = appendKey(dst, "request_sha256", false)
	dst = appendHex(dst, r.RequestSHA256[:])
	dst = appendKey(dst, "response_sha256", false)
	dst = appendHex(dst, r.ResponseSHA256[:])
	dst = appendKey(dst, "stream", false)
	dst = appendJSONBool(dst, r.Stream)
	dst = appendKey(dst, "usage", false)
	dst = appendKey(append(dst, '{'), "completion_tokens", true)
	dst = appendJSONUint(dst, uint64(r.Usage.CompletionTokens))
	dst = appendKey(dst, "prompt_tokens", false)
	dst = appendJSONUint(dst, uint64(r.Usage.PromptTokens))
	dst = appendKey(dst, "total_tokens", false)
	dst = appendJSONUint(dst, uint64(r.Usage.TotalTokens))
	dst = append(dst, '}')
	dst = appendKey(dst, "version", false)
	dst = appendJSONUint(dst, uint64(r.Version))
	return append(dst, '}')
}

// AppendSigningInput appends the bytes the Ed25519 signature covers:
// "teegate/receipt/v1" || 0x00 || canonical receipt body. It is also the
// leaf data of the receipt in a fresh-mode batch.
func (r *Receipt) AppendSigningInput(dst []byte) []byte {
	dst = append(dst, DomainReceipt...)
	dst = append(dst, 0)
	return r.AppendCanonical(dst)
}

// LeafHash is the receipt's Merkle leaf hash in a fresh-mode batch.
func (r *Receipt) LeafHash() [32]byte {
	var buf [512]byte
	return merkle.LeafHash(r.AppendSigningInput(buf[:0]))
}

// MarshalJSON writes the canonical body.
func (r Receipt) MarshalJSON() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("encoding receipt: %w", err)
	}
	return r.AppendCanonical(nil), nil
}

type receiptJSON struct {
	Created        string  `json:"created"`
	EvidenceID     string  `json:"evidence_id"`
	Model          present `json:"model"`
	Nonce          present `json:"nonce"`
	RequestID      string  `json:"request_id"`
	RequestSHA256  string  `json:"request_sha256"`
	ResponseSHA256 string  `json:"response_sha256"`
	Stream         *bool   `json:"stream"`
	Usage          *struct {
		CompletionTokens *int64 `json:"completion_tokens"`
		PromptTokens     *int64 `json:"prompt_tokens"`
		TotalTokens      *int64 `json:"total_tokens"`
	} `json:"usage"`
	Version int `json:"version"`
}

// UnmarshalJSON decodes a receipt body strictly: every member present (nonce
// optional, but not empty when present: the canonical form omits an empty
// nonce, so "nonce":"" would be signed as if absent), no unknown members,
// digests as 64 lowercase hex digits. It does not demand canonical form,
// because the signature is checked over the canonical re-encoding of the
// decoded values.
func (r *Receipt) UnmarshalJSON(data []byte) error {
	var w receiptJSON
	if err := strictUnmarshal(data, &w); err != nil {
		return fmt.Errorf("decoding receipt: %w", err)
	}
	if w.Stream == nil || !w.Model.set || w.Usage == nil || w.Usage.CompletionTokens == nil ||
		w.Usage.PromptTokens == nil || w.Usage.TotalTokens == nil {
		return fmt.Errorf("decoding receipt: missing member: %w", ErrMalformed)
	}
	if w.Nonce.set && w.Nonce.v == "" {
		return fmt.Errorf("decoding receipt: empty nonce: %w", ErrMalformed)
	}
	created, err := time.Parse(TimeLayout, w.Created)
	if err != nil {
		return fmt.Errorf("decoding receipt created: %w", ErrMalformed)
	}
	out := Receipt{
		Version: w.Version, RequestID: w.RequestID, EvidenceID: w.EvidenceID,
		Model: w.Model.v, Stream: *w.Stream, Nonce: w.Nonce.v, Created: created,
		Usage: Usage{
			PromptTokens:     *w.Usage.PromptTokens,
			CompletionTokens: *w.Usage.CompletionTokens,
			TotalTokens:      *w.Usage.TotalTokens,
		},
	}
	if err := decodeDigest(w.RequestSHA256, &out.RequestSHA256); err != nil {
		return fmt.Errorf("decoding receipt request_sha256: %w", err)
	}
	if err := decodeDigest(w.ResponseSHA256, &out.ResponseSHA256); err != nil {
		return fmt.Errorf("decoding receipt response_sha256: %w", err)
	}
	if err := out.Validate(); err != nil {
		return fmt.Errorf("decoding receipt: %w", err)
	}
	*r = out
	return nil
}

// present is a JSON string member whose presence is recorded: a required
// member may be the empty string but not absent, an optional one absent but
// not empty. null is neither (optional members are omitted, never null).
type present struct {
	set bool
	v   string
}

func (p *present) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return fmt.Errorf("null string member: %w", ErrMalformed)
	}
	p.set = true
	return json.Unmarshal(b, &p.v)
}

func decodeDigest(s string, out *[32]byte) error {
	if !isHexID(s) {
		return fmt.Errorf("not 64 lowercase hex digits: %w", ErrMalformed)
	}
	_, err := hex.Decode(out[:], []byte(s))
	return err
}

// AppendJSON appends the envelope: {"batch":{...}?, "receipt":{...},
// "signature":"<base64url>"}, members sorted, no whitespace. Batch members:
// evidence_id, leaf_index, proof (hex strings, bottom-up), root, tree_size.
func (sr *SignedReceipt) AppendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	first := true
	if b := sr.Batch; b != nil {
		dst = appendKey(dst, "batch", true)
		dst = appendKey(append(dst, '{'), "evidence_id", true)
		dst = appendJSONString(dst, b.EvidenceID)
		dst = appendKey(dst, "leaf_index", false)
		dst = appendJSONUint(dst, b.LeafIndex)
		dst = appendKey(dst, "proof", false)
		dst = append(dst, '[')
		for i, p := range b.Proof {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendHex(dst, p[:])
		}
		dst = append(dst, ']')
		dst = appendKey(dst, "root", false)
		dst = appendHex(dst, b.Root[:])
		dst = appendKey(dst, "tree_size", false)
		dst = appendJSONUint(dst, b.TreeSize)
		dst = append(dst, '}')
		first = false
	}
	dst = appendKey(dst, "receipt", first)
	dst = sr.Receipt.AppendCanonical(dst)
	dst = appendKey(dst, "signature", false)
	dst = appendB64(dst, sr.Signature)
	return append(dst, '}')
}

// MarshalJSON writes the envelope (see AppendJSON).
func (sr SignedReceipt) MarshalJSON() ([]byte, error) {
	if err := sr.Receipt.Validate(); err != nil {
		return nil, fmt.Errorf("encoding receipt: %w", err)
	}
	return sr.AppendJSON(nil), nil
}

// HeaderValue is the envelope JSON as base64url without padding, for the
// Teegate-Receipt header.
func (sr *SignedReceipt) HeaderValue() string {
	var buf [1024]byte
	return base64.RawURLEncoding.EncodeToString(sr.AppendJSON(buf[:0]))
}

type batchJSON struct {
	EvidenceID string   `json:"evidence_id"`
	LeafIndex  *uint64  `json:"leaf_index"`
	Proof      []string `json:"proof"`
	Root       string   `json:"root"`
	TreeSize   *uint64  `json:"tree_size"`
}

type signedJSON struct {
	Batch     *batchJSON      `json:"batch"`
	Receipt   json.RawMessage `json:"receipt"`
	Signature b64             `json:"signature"`
}

// UnmarshalJSON decodes the envelope strictly.
func (sr *SignedReceipt) UnmarshalJSON(data []byte) error {
	var w signedJSON
	if err := strictUnmarshal(data, &w); err != nil {
		return fmt.Errorf("decoding signed receipt: %w", err)
	}
	if len(w.Receipt) == 0 {
		return fmt.Errorf("decoding signed receipt: missing receipt: %w", ErrMalformed)
	}
	var out SignedReceipt
	if err := out.Receipt.UnmarshalJSON(w.Receipt); err != nil {
		return err
	}
	if len(w.Signature) != ed25519.SignatureSize {
		return fmt.Errorf("decoding signed receipt: signature of %d bytes: %w", len(w.Signature), ErrMalformed)
	}
	out.Signature = w.Signature
	if b := w.Batch; b != nil {
		if !isHexID(b.EvidenceID) || b.LeafIndex == nil || b.TreeSize == nil || len(b.Proof) > merkle.MaxProofLen {
			return fmt.Errorf("decoding batch proof: %w: %w", ErrBatchProof, ErrMalformed)
		}
		bp := &BatchProof{EvidenceID: b.EvidenceID, LeafIndex: *b.LeafIndex, TreeSize: *b.TreeSize, Proof: make([][32]byte, len(b.Proof))}
		for i, p := range b.Proof {
			if err := decodeDigest(p, &bp.Proof[i]); err != nil {
				return fmt.Errorf("decoding batch proof: %w: %w", ErrBatchProof, err)
			}
		}
		if err := decodeDigest(b.Root, &bp.Root); err != nil {
			return fmt.Errorf("decoding batch root: %w: %w", ErrBatchProof, err)
		}
		out.Batch = bp
	}
	*sr = out
	return nil
}

// ReceiptCheck is what the client knows and the receipt must match.
type ReceiptCheck struct {
	// Request is the exact request body the client sent.
	Request []byte
	// Response is the exact non-stream response body. Ignored when
	// ResponseDigest is set.
	Response []byte
	// ResponseDigest is the stream digest (StreamHasher.Sum or DigestSSE),
	// or a precomputed body digest.
	ResponseDigest *[32]byte
	// Nonce is the client nonce sent with the request, empty if none. A
	// nonce asks for fresh mode, so a batch proof is then required.
	Nonce string
}

// VerifyReceipt checks a signed receipt against a verified bundle (ev) and,
// for a batch proof, the verified fresh bundle it names. Checks, in order:
// version and schema; evidence id (ErrEvidenceMismatch); signature
// (ErrReceiptSignature); request hash (ErrRequestHash); response hash
// (ErrResponseHash); nonce (ErrNonceMismatch); batch proof (ErrBatchProof).
// A present batch proof is always checked; one is required when chk.Nonce is
// set.
func VerifyReceipt(sr *SignedReceipt, ev, fresh *Verified, chk ReceiptCheck) error {
	r := &sr.Receipt
	if err := r.Validate(); err != nil {
		return fmt.Errorf("verifying receipt: %w", err)
	}
	if ev == nil || ev.Bundle == nil || ev.ID != r.EvidenceID {
		return fmt.Errorf("verifying receipt: %w", ErrEvidenceMismatch)
	}
	var buf [512]byte
	input := r.AppendSigningInput(buf[:0])
	if len(sr.Signature) != ed25519.SignatureSize ||
		!ed25519.Verify(ed25519.PublicKey(ev.Bundle.SigningPub), input, sr.Signature) {
		return fmt.Errorf("verifying receipt: %w", ErrReceiptSignature)
	}
	if sha256.Sum256(chk.Request) != r.RequestSHA256 {
		return fmt.Errorf("verifying receipt: %w", ErrRequestHash)
	}
	var resp [32]byte
	if chk.ResponseDigest != nil {
		resp = *chk.ResponseDigest
	} else {
		resp = sha256.Sum256(chk.Response)
	}
	if resp != r.ResponseSHA256 {
		return fmt.Errorf("verifying receipt: %w", ErrResponseHash)
	}
	if chk.Nonce != "" && chk.Nonce != r.Nonce {
		return fmt.Errorf("verifying receipt: %w", ErrNonceMismatch)
	}
	if sr.Batch == nil {
		if chk.Nonce != "" {
			return fmt.Errorf("verifying receipt: nonce sent but no batch proof: %w", ErrBatchProof)
		}
		return nil
	}
	if err := verifyBatch(sr.Batch, merkle.LeafHash(input), ev, fresh); err != nil {
		return fmt.Errorf("verifying receipt: %w", err)
	}
	return nil
}

func verifyBatch(b *BatchProof, leaf [32]byte, ev, fresh *Verified) error {
	if fresh == nil || fresh.Bundle == nil || fresh.ID != b.EvidenceID {
		return fmt.Errorf("fresh bundle %.16s not offered: %w", b.EvidenceID, ErrBatchProof)
	}
	if !bytes.Equal(fresh.Bundle.SigningPub, ev.Bundle.SigningPub) {
		return fmt.Errorf("fresh bundle binds another key: %w", ErrBatchProof)
	}
	if fresh.Bundle.EpochNonce != BatchNonce(b.Root) {
		return fmt.Errorf("fresh bundle does not commit to the root: %w", ErrBatchProof)
	}
	if err := merkle.VerifyInclusion(leaf, b.LeafIndex, b.TreeSize, b.Proof, b.Root); err != nil {
		return fmt.Errorf("%w: %w", ErrBatchProof, err)
	}
	return nil
}
