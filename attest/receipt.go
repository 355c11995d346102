package attest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/teegate/teegate/attest/merkle"
)

// ReceiptVersion is the only receipt version this package signs and accepts
// (docs/attestation.md §15). Version 1 receipts are refused by name
// (ErrUnsupportedVersion, "version 1 ... no longer accepted"): their stream
// digest left SSE framing and data after the receipt uncovered.
const ReceiptVersion = 2

// HTTP headers and SSE members that carry receipts and evidence.
const (
	// HeaderReceipt carries SignedReceipt.HeaderValue on non-stream
	// responses.
	HeaderReceipt = "Teegate-Receipt"
	// HeaderEvidenceID carries the id of the bundle that signed the
	// response (also inside the receipt), so clients can prefetch it; on
	// streams too, where it names the worker's epoch when the stream
	// started (the receipt's evidence_id is authoritative).
	HeaderEvidenceID = "Teegate-Evidence-Id"
	// HeaderNonce carries the client's fresh-mode nonce on a request.
	HeaderNonce = "Teegate-Nonce"
	// HeaderInlineEvidence on a request asks for the bundle with the
	// answer: in a stream's receipt event (teegate_evidence). A non-stream
	// answer is never given more than HeaderEvidenceID: the bundle (~18 KB)
	// does not fit the header limits of Node's fetch and common proxies,
	// and the body stays the worker's bytes; clients fetch the bundle by
	// id (docs/attestation.md §7.4).
	HeaderInlineEvidence = "Teegate-Inline-Evidence"
	// HeaderEvidence is the bundle as base64url, which older gateways sent
	// on non-stream answers. teegate no longer sends it; the Go client
	// still reads it when present.
	HeaderEvidence = "Teegate-Evidence"
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

// Values of Receipt.UsageSource (docs/attestation.md §7).
const (
	// UsageFromEngine: the usage the engine reported in the answer the
	// client received (the body's usage, or the stream's usage chunk the
	// client asked for), so the client can compare it with its bytes.
	UsageFromEngine = "engine"
	// UsageRequested: a stream whose client did not ask for usage; the
	// worker asked the engine for it and kept the usage chunk back.
	UsageRequested = "engine_requested"
	// UsageNone: the engine reported no usage; the counters are zero.
	UsageNone = "none"
)

func validUsageSource(s string) bool {
	return s == UsageFromEngine || s == UsageRequested || s == UsageNone
}

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
	Nonce string
	// UsageSource says where Usage comes from (UsageFromEngine,
	// UsageRequested, UsageNone); empty in receipts that do not say.
	UsageSource string
	Created     time.Time
	Usage       Usage
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
	if r.UsageSource != "" && !validUsageSource(r.UsageSource) {
		return fmt.Errorf("usage_source %q: %w", truncateForError(r.UsageSource), ErrMalformed)
	}
	return nil
}

func truncateForError(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
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
// usage[completion_tokens, prompt_tokens, total_tokens], usage_source
// (omitted when empty), version.
func (r *Receipt) AppendCanonical(dst []byte) []byte {
	dst = append(dst, '{')
	dst = appendKey(dst, "created", true)
	// The timestamp never needs escaping, so it is formatted in place.
	dst = append(dst, '"')
	dst = appendTime(dst, r.Created)
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
	if r.UsageSource != "" {
		dst = appendKey(dst, "usage_source", false)
		dst = appendJSONString(dst, r.UsageSource)
	}
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

// Members of a receipt body, as bits of receiptWire.seen.
const (
	rmCreated uint32 = 1 << iota
	rmEvidenceID
	rmModel
	rmNonce
	rmRequestID
	rmRequestSHA256
	rmResponseSHA256
	rmStream
	rmUsage
	rmVersion
	rmCompletionTokens
	rmPromptTokens
	rmTotalTokens
	rmUsageSource
)

// receiptWire is a receipt body as read, before its values are checked.
type receiptWire struct {
	seen                               uint32
	created, evidenceID, model, nonce  string
	requestID, requestSHA, responseSHA string
	usageSource                        string
	stream                             bool
	version                            uint64
	completion, prompt, total          uint64
}

// readReceiptBody reads a receipt body object at d: its syntax, member
// names (no unknown or repeated member) and value types. The values are
// checked by receiptWire.receipt once the whole input was read, so that a
// syntax error anywhere in an envelope is reported as such, as before.
func readReceiptBody(d *jsonReader, w *receiptWire) error {
	return d.object(&w.seen, "", func(key string) (bit uint32, err error) {
		switch key {
		case "created":
			w.created, err = d.str()
			return rmCreated, err
		case "evidence_id":
			w.evidenceID, err = d.str()
			return rmEvidenceID, err
		case "model":
			w.model, err = d.str()
			return rmModel, err
		case "nonce":
			w.nonce, err = d.str()
			return rmNonce, err
		case "request_id":
			w.requestID, err = d.str()
			return rmRequestID, err
		case "request_sha256":
			w.requestSHA, err = d.str()
			return rmRequestSHA256, err
		case "response_sha256":
			w.responseSHA, err = d.str()
			return rmResponseSHA256, err
		case "stream":
			w.stream, err = d.bool()
			return rmStream, err
		case "usage":
			return rmUsage, readUsage(d, w)
		case "usage_source":
			w.usageSource, err = d.str()
			return rmUsageSource, err
		case "version":
			w.version, err = d.uint(maxSafeInt)
			return rmVersion, err
		}
		return 0, nil
	})
}

// readUsage reads the usage object of a receipt body.
func readUsage(d *jsonReader, w *receiptWire) error {
	return d.object(&w.seen, "usage ", func(key string) (bit uint32, err error) {
		switch key {
		case "completion_tokens":
			w.completion, err = d.uint(maxSafeInt)
			return rmCompletionTokens, err
		case "prompt_tokens":
			w.prompt, err = d.uint(maxSafeInt)
			return rmPromptTokens, err
		case "total_tokens":
			w.total, err = d.uint(maxSafeInt)
			return rmTotalTokens, err
		}
		return 0, nil
	})
}

// receipt checks the values read and returns the receipt: every member
// present (nonce optional, but not empty when present: the canonical form
// omits an empty nonce, so "nonce":"" would be signed as if absent), the
// time in TimeLayout, digests as 64 lowercase hex digits, then Validate.
// An absent version reads as 0, an unsupported version.
func (w *receiptWire) receipt() (Receipt, error) {
	const required = rmModel | rmStream | rmUsage | rmCompletionTokens | rmPromptTokens | rmTotalTokens
	if w.seen&required != required {
		return Receipt{}, fmt.Errorf("decoding receipt: missing member: %w", ErrMalformed)
	}
	if w.seen&rmNonce != 0 && w.nonce == "" {
		return Receipt{}, fmt.Errorf("decoding receipt: empty nonce: %w", ErrMalformed)
	}
	if w.seen&rmUsageSource != 0 && !validUsageSource(w.usageSource) {
		return Receipt{}, fmt.Errorf("decoding receipt: usage_source is not engine, engine_requested or none: %w", ErrMalformed)
	}
	created, err := parseTime(w.created)
	if err != nil {
		return Receipt{}, fmt.Errorf("decoding receipt created: %w", ErrMalformed)
	}
	out := Receipt{
		Version: ReceiptVersion, RequestID: w.requestID, EvidenceID: w.evidenceID,
		Model: w.model, Stream: w.stream, Nonce: w.nonce, UsageSource: w.usageSource, Created: created,
		Usage: Usage{
			PromptTokens:     int64(w.prompt),
			CompletionTokens: int64(w.completion),
			TotalTokens:      int64(w.total),
		},
	}
	if err := decodeDigest(w.requestSHA, &out.RequestSHA256); err != nil {
		return Receipt{}, fmt.Errorf("decoding receipt request_sha256: %w", err)
	}
	if err := decodeDigest(w.responseSHA, &out.ResponseSHA256); err != nil {
		return Receipt{}, fmt.Errorf("decoding receipt response_sha256: %w", err)
	}
	// Compared as read rather than after a conversion to int, which
	// could wrap on 32-bit platforms.
	if w.version == 1 {
		return Receipt{}, fmt.Errorf("decoding receipt: receipt version 1 is no longer accepted (its stream digest does not cover SSE framing, docs/attestation.md §15): %w", ErrUnsupportedVersion)
	}
	if w.version != ReceiptVersion {
		return Receipt{}, fmt.Errorf("decoding receipt: receipt version %d: %w", w.version, ErrUnsupportedVersion)
	}
	if err := out.Validate(); err != nil {
		return Receipt{}, fmt.Errorf("decoding receipt: %w", err)
	}
	return out, nil
}

// UnmarshalJSON decodes a receipt body strictly: the restricted JSON of
// docs/attestation.md §1 (no null, integers as plain digits, valid UTF-8),
// every member present (nonce optional, not empty), no unknown or repeated
// members, member names matched exactly, digests as 64 lowercase hex
// digits. It does not demand canonical form (whitespace, member order and
// escapes are free), because the signature is checked over the canonical
// re-encoding of the decoded values.
func (r *Receipt) UnmarshalJSON(data []byte) error {
	// One copy of the input; the receipt's strings are substrings of it.
	d := jsonReader{s: string(data)}
	var w receiptWire
	if err := readReceiptBody(&d, &w); err != nil {
		return fmt.Errorf("decoding receipt: %w", err)
	}
	if err := d.end(); err != nil {
		return fmt.Errorf("decoding receipt: %w", err)
	}
	out, err := w.receipt()
	if err != nil {
		return err
	}
	*r = out
	return nil
}

func decodeDigest(s string, out *[32]byte) error {
	if len(s) != 2*len(out) {
		return fmt.Errorf("not 64 lowercase hex digits: %w", ErrMalformed)
	}
	for i := range out {
		hi, ok1 := unhexLower(s[2*i])
		lo, ok2 := unhexLower(s[2*i+1])
		if !ok1 || !ok2 {
			return fmt.Errorf("not 64 lowercase hex digits: %w", ErrMalformed)
		}
		out[i] = hi<<4 | lo
	}
	return nil
}

// unhexLower is the value of a lowercase hex digit.
func unhexLower(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
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

// Members of an envelope and of its batch proof, as bits of seen fields.
const (
	emBatch uint32 = 1 << iota
	emReceipt
	emSignature
)

const (
	bmEvidenceID uint32 = 1 << iota
	bmLeafIndex
	bmProof
	bmRoot
	bmTreeSize
)

// envelopeWire is an envelope as read, before its values are checked.
type envelopeWire struct {
	seen    uint32
	receipt receiptWire
	sig     [ed25519.SignatureSize]byte
	sigLen  int
	batch   batchWire
}

// batchWire is a batch proof as read. Proof entries past MaxProofLen are
// counted, not kept; the first bad entry is remembered in proofErr.
type batchWire struct {
	seen                uint32
	evidenceID, root    string
	leafIndex, treeSize uint64
	proof               [][32]byte
	proofLen            int
	proofErr            error
}

func readEnvelope(d *jsonReader, w *envelopeWire) error {
	return d.object(&w.seen, "", func(key string) (bit uint32, err error) {
		switch key {
		case "batch":
			return emBatch, readBatch(d, &w.batch)
		case "receipt":
			return emReceipt, readReceiptBody(d, &w.receipt)
		case "signature":
			var s string
			if s, err = d.str(); err == nil {
				w.sigLen, err = decodeSignature(s, &w.sig)
			}
			return emSignature, err
		}
		return 0, nil
	})
}

func readBatch(d *jsonReader, b *batchWire) error {
	return d.object(&b.seen, "batch ", func(key string) (bit uint32, err error) {
		switch key {
		case "evidence_id":
			b.evidenceID, err = d.str()
			return bmEvidenceID, err
		case "leaf_index":
			b.leafIndex, err = d.uint(math.MaxUint64)
			return bmLeafIndex, err
		case "proof":
			return bmProof, readProof(d, b)
		case "root":
			b.root, err = d.str()
			return bmRoot, err
		case "tree_size":
			b.treeSize, err = d.uint(math.MaxUint64)
			return bmTreeSize, err
		}
		return 0, nil
	})
}

func readProof(d *jsonReader, b *batchWire) error {
	if !d.consume('[') {
		return d.syntaxError("array")
	}
	b.proof, b.proofLen, b.proofErr = b.proof[:0], 0, nil
	for n := 0; ; n++ {
		if d.consume(']') {
			return nil
		}
		if n > 0 && !d.consume(',') {
			return d.syntaxError("',' or ']'")
		}
		p, err := d.str()
		if err != nil {
			return err
		}
		b.proofLen++
		if b.proofLen > merkle.MaxProofLen {
			continue
		}
		var h [32]byte
		if err := decodeDigest(p, &h); err != nil && b.proofErr == nil {
			b.proofErr = err
		}
		b.proof = append(b.proof, h)
	}
}

// batchProof checks the values read.
func (b *batchWire) batchProof() (*BatchProof, error) {
	const required = bmEvidenceID | bmLeafIndex | bmProof | bmTreeSize
	if b.seen&required != required || !isHexID(b.evidenceID) || b.proofLen > merkle.MaxProofLen {
		return nil, fmt.Errorf("decoding batch proof: %w: %w", ErrBatchProof, ErrMalformed)
	}
	if b.proofErr != nil {
		return nil, fmt.Errorf("decoding batch proof: %w: %w", ErrBatchProof, b.proofErr)
	}
	bp := &BatchProof{EvidenceID: b.evidenceID, LeafIndex: b.leafIndex, TreeSize: b.treeSize, Proof: b.proof}
	if bp.Proof == nil {
		bp.Proof = [][32]byte{}
	}
	if err := decodeDigest(b.root, &bp.Root); err != nil {
		return nil, fmt.Errorf("decoding batch root: %w: %w", ErrBatchProof, err)
	}
	return bp, nil
}

// UnmarshalJSON decodes the envelope strictly: the rules of
// Receipt.UnmarshalJSON, plus a signature of 64 bytes in strict base64url
// and, when present, a batch proof with every member.
func (sr *SignedReceipt) UnmarshalJSON(data []byte) error {
	// One copy of the input; the receipt's strings are substrings of it.
	var out SignedReceipt
	sig := new([ed25519.SignatureSize]byte)
	if err := decodeEnvelope(string(data), &out, sig); err != nil {
		return err
	}
	*sr = out
	return nil
}

// decodeEnvelope decodes an envelope into out, whose Signature then refers
// to sig: a caller that allocates both together saves an allocation.
func decodeEnvelope(s string, out *SignedReceipt, sig *[ed25519.SignatureSize]byte) error {
	d := jsonReader{s: s}
	var w envelopeWire
	if err := readEnvelope(&d, &w); err != nil {
		return fmt.Errorf("decoding signed receipt: %w", err)
	}
	if err := d.end(); err != nil {
		return fmt.Errorf("decoding signed receipt: %w", err)
	}
	if w.seen&emReceipt == 0 {
		return fmt.Errorf("decoding signed receipt: missing receipt: %w", ErrMalformed)
	}
	r, err := w.receipt.receipt()
	if err != nil {
		return err
	}
	if w.sigLen != ed25519.SignatureSize {
		return fmt.Errorf("decoding signed receipt: signature of %d bytes: %w", w.sigLen, ErrMalformed)
	}
	var bp *BatchProof
	if w.seen&emBatch != 0 {
		if bp, err = w.batch.batchProof(); err != nil {
			return err
		}
	}
	*sig = w.sig
	*out = SignedReceipt{Receipt: r, Signature: sig[:], Batch: bp}
	return nil
}

// ParseReceiptHeader is ParseReceipt for a Teegate-Receipt header value as
// a client holds it, a string: it accepts exactly what ParseReceipt does,
// and decodes the usual form (base64url of an envelope) without the copies
// and byte-at-a-time scans of the general path, since a client pays for it
// on every answer.
func ParseReceiptHeader(v string) (*SignedReceipt, error) {
	s := strings.TrimSpace(v)
	if len(v) <= MaxReceiptSize && s != "" && s[0] != '{' && !strings.HasPrefix(s, "data:") {
		env, err := decodeBase64URLString(s)
		if err != nil {
			return nil, fmt.Errorf("parsing receipt header: %w", ErrMalformed)
		}
		// ParseReceipt takes the envelope directly when it starts with
		// one of its own members; anything else goes the general way.
		if strings.HasPrefix(env, `{"receipt":`) || strings.HasPrefix(env, `{"batch":`) {
			// The receipt's strings are substrings of env; it and
			// the signature's array are the only allocations.
			a := new(struct {
				sr  SignedReceipt
				sig [ed25519.SignatureSize]byte
			})
			if err := decodeEnvelope(env, &a.sr, &a.sig); err != nil {
				return nil, fmt.Errorf("parsing receipt: %w", err)
			}
			return &a.sr, nil
		}
	}
	return ParseReceipt([]byte(v))
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
	// Now is the verification time (zero: time.Now()); a receipt created
	// more than MaxClockSkew after it is refused (ErrReceiptTime).
	Now time.Time
	// MaxClockSkew tolerated between clocks (default 5 minutes).
	MaxClockSkew time.Duration
	// IgnoreEpoch skips the check that the receipt was created inside its
	// bundle's epoch window (ErrReceiptEpoch). For forensics only: a
	// receipt outside it was signed by a key that should not have existed
	// or should have been erased.
	IgnoreEpoch bool
}

// DefaultMaxClockSkew is the clock difference verifiers tolerate when a
// time is compared with another clock's (evidence and receipts from the
// future, a receipt against its bundle's creation).
const DefaultMaxClockSkew = 5 * time.Minute

// checkReceiptTime bounds a receipt's created (docs/attestation.md §10
// step 4): not after the verification time, inside the epoch window its
// bundle states (the key existed and was not yet erased), and not before
// its bundle was created.
func checkReceiptTime(r *Receipt, ev *Verified, chk *ReceiptCheck) error {
	skew := chk.MaxClockSkew
	if skew <= 0 {
		skew = DefaultMaxClockSkew
	}
	now := chk.Now
	if now.IsZero() {
		now = time.Now()
	}
	switch {
	case r.Created.After(now.Add(skew)):
		return fmt.Errorf("receipt created %s, in the future: %w", r.Created.Format(TimeLayout), ErrReceiptTime)
	case !chk.IgnoreEpoch && r.Created.Before(ev.Bundle.Epoch.NotBefore.Add(-skew)):
		return fmt.Errorf("receipt created %s, before its key epoch (not_before %s): %w: %w", r.Created.Format(TimeLayout), ev.Bundle.Epoch.NotBefore.Format(TimeLayout), ErrReceiptEpoch, ErrReceiptTime)
	case !chk.IgnoreEpoch && r.Created.After(ev.Bundle.Epoch.ErasedAt().Add(skew)):
		return fmt.Errorf("receipt created %s, after its key epoch's keys were erased (%s): %w: %w", r.Created.Format(TimeLayout), ev.Bundle.Epoch.ErasedAt().Format(TimeLayout), ErrReceiptEpoch, ErrReceiptTime)
	case r.Created.Before(ev.Bundle.Created.Add(-skew)):
		return fmt.Errorf("receipt created %s, before its bundle (%s): %w", r.Created.Format(TimeLayout), ev.Bundle.Created.Format(TimeLayout), ErrReceiptTime)
	}
	return nil
}

// VerifyReceipt checks a signed receipt against a verified bundle (ev) and,
// for a batch proof, the verified fresh bundle it names. Checks, in order:
// version and schema; evidence id (ErrEvidenceMismatch); signature
// (ErrReceiptSignature); created not in the future (ErrReceiptTime), inside
// the bundle's epoch window (ErrReceiptEpoch, which also matches
// ErrReceiptTime) and not before the bundle (ErrReceiptTime); request hash (ErrRequestHash); response hash
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
	if err := checkReceiptTime(r, ev, &chk); err != nil {
		return fmt.Errorf("verifying receipt: %w", err)
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
	if err := verifyBatch(sr.Batch, r, merkle.LeafHash(input), ev, fresh, chk.MaxClockSkew); err != nil {
		return fmt.Errorf("verifying receipt: %w", err)
	}
	return nil
}

func verifyBatch(b *BatchProof, r *Receipt, leaf [32]byte, ev, fresh *Verified, skew time.Duration) error {
	if fresh == nil || fresh.Bundle == nil || fresh.ID != b.EvidenceID {
		return fmt.Errorf("fresh bundle %.16s not offered: %w", b.EvidenceID, ErrBatchProof)
	}
	if err := sameMachine(ev.Bundle, fresh.Bundle); err != nil {
		return fmt.Errorf("fresh bundle %w: %w", err, ErrBatchProof)
	}
	if skew <= 0 {
		skew = DefaultMaxClockSkew
	}
	if fresh.Bundle.Created.Before(r.Created.Add(-skew)) {
		return fmt.Errorf("fresh bundle created before the receipt: %w", ErrBatchProof)
	}
	if fresh.Bundle.EpochNonce != BatchNonce(b.TreeSize, b.Root) {
		return fmt.Errorf("fresh bundle does not commit to the tree size and root: %w", ErrBatchProof)
	}
	if err := merkle.VerifyInclusion(leaf, b.LeafIndex, b.TreeSize, b.Proof, b.Root); err != nil {
		return fmt.Errorf("%w: %w", ErrBatchProof, err)
	}
	return nil
}

// sameMachine checks that a fresh bundle comes from the epoch and machine
// of the receipt's bundle (docs/attestation.md §9.4 step 2): the same keys,
// epoch window, TEE kind, worker identity, simulated roots and GPUs (architecture, mode
// and certificate chain: the same devices; their reports differ, being
// bound to another nonce).
func sameMachine(a, b *Bundle) error {
	switch {
	case !bytes.Equal(a.SigningPub, b.SigningPub):
		return errors.New("binds another signing key")
	case !bytes.Equal(a.HPKEPub, b.HPKEPub):
		return errors.New("binds another HPKE key")
	case a.TEE != b.TEE:
		return errors.New("is of another TEE kind")
	case !a.Epoch.Equal(b.Epoch):
		return errors.New("states another epoch window")
	case a.Worker.ID != b.Worker.ID || a.Worker.Provider != b.Worker.Provider || !slices.Equal(a.Worker.Models, b.Worker.Models):
		return errors.New("names another worker")
	case !slices.EqualFunc(a.SimulatedRoots, b.SimulatedRoots, bytes.Equal):
		return errors.New("chains to other simulated roots")
	case len(a.GPUs) != len(b.GPUs):
		return errors.New("has other GPUs")
	}
	for i := range a.GPUs {
		g, h := &a.GPUs[i], &b.GPUs[i]
		if g.Arch != h.Arch || g.CCMode != h.CCMode || !bytes.Equal(g.CertChain, h.CertChain) {
			return fmt.Errorf("has another GPU %d", i)
		}
	}
	return nil
}
