package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Version is the record format version.
const Version = 1

// Domains of the chain hash and of checkpoint signatures.
const (
	domainRecord     = "teegate/audit/v1"
	domainCheckpoint = "teegate/audit-checkpoint/v1"
)

// Record kinds.
const (
	KindAdmission  = "admission"  // a worker admission decision (allowed or refused)
	KindEviction   = "eviction"   // an admitted worker told to drain
	KindReceipt    = "receipt"    // a receipt the gateway relayed
	KindRefusal    = "refusal"    // a request the gateway refused (limits, budget)
	KindKey        = "key"        // an API key created, revoked or rotated
	KindCheckpoint = "checkpoint" // a signed statement of the chain's head
)

// Usage is a receipt's token accounting.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// Entry is the content of one record. Which members are set depends on
// Kind; none ever holds prompt or completion text.
type Entry struct {
	Kind string    `json:"kind"`
	Time time.Time `json:"time"`
	// Salt (random) keeps the digest of a record unguessable, so a
	// tenant's export can stand other tenants' records in by digest.
	Salt string `json:"salt"`
	// Tenant owns the record (receipts, refusals, key changes); empty for
	// fleet records (admissions, evictions, checkpoints).
	Tenant string `json:"tenant,omitempty"`
	// Gateway names the replica that wrote the record.
	Gateway string `json:"gateway,omitempty"`

	// Receipts and refusals.
	RequestID  string `json:"request_id,omitempty"`
	KeyID      string `json:"key_id,omitempty"`
	Model      string `json:"model,omitempty"`
	Worker     string `json:"worker,omitempty"`
	Provider   string `json:"provider,omitempty"`
	EvidenceID string `json:"evidence_id,omitempty"`
	Stream     bool   `json:"stream,omitempty"`
	Usage      *Usage `json:"usage,omitempty"`
	// Receipt is the signed receipt envelope as the worker produced it.
	Receipt json.RawMessage `json:"receipt,omitempty"`
	Status  int             `json:"status,omitempty"`

	// Admissions, evictions, refusals.
	Allow   *bool           `json:"allow,omitempty"`
	Reasons []string        `json:"reasons,omitempty"`
	Claims  json.RawMessage `json:"claims,omitempty"`
	Policy  string          `json:"policy,omitempty"`
	Models  []string        `json:"models,omitempty"`
	// Evidence is the bundle (canonical bytes) the first time a decision
	// names it, so the log verifies receipts without the evidence bucket.
	Evidence []byte `json:"evidence,omitempty"`

	// Key changes: Action is create, revoke or rotate.
	Action string `json:"action,omitempty"`

	// Checkpoints: the head they sign and the signature over it.
	HeadSeq   uint64 `json:"head_seq,omitempty"`
	HeadHash  string `json:"head_hash,omitempty"`
	SignerKey string `json:"signer,omitempty"`
	Signature []byte `json:"signature,omitempty"`
}

// newSalt returns 16 random bytes in hex.
func newSalt() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Record is one line of the log: the chain position, the previous hash,
// this record's hash and its content (the exact JSON bytes of an Entry),
// or, in an export, only the content's digest.
type Record struct {
	Seq  uint64
	Prev [32]byte
	Hash [32]byte
	// Content is the Entry's JSON; nil for a link (ContentSHA256 only).
	Content       []byte
	ContentSHA256 [32]byte
}

// Errors of the record format and the chain. Verify wraps them with the
// sequence of the record concerned.
var (
	ErrMalformed   = errors.New("malformed audit record")
	ErrHash        = errors.New("record hash does not match its content")
	ErrBrokenChain = errors.New("record does not chain to the previous record")
	ErrMissing     = errors.New("records missing from the chain")
	ErrCheckpoint  = errors.New("checkpoint invalid")
	ErrReceipt     = errors.New("receipt does not verify against its evidence")
)

// ChainHash is hash(n) for a record at seq with the previous hash and the
// content's digest.
func ChainHash(seq uint64, prev, content [32]byte) [32]byte {
	var buf [len(domainRecord) + 1 + 8 + 64]byte
	n := copy(buf[:], domainRecord)
	buf[n] = 0
	binary.BigEndian.PutUint64(buf[n+1:], seq)
	copy(buf[n+9:], prev[:])
	copy(buf[n+41:], content[:])
	return sha256.Sum256(buf[:])
}

// newRecord chains content after (seq-1, prev).
func newRecord(seq uint64, prev [32]byte, content []byte) Record {
	d := sha256.Sum256(content)
	return Record{Seq: seq, Prev: prev, Hash: ChainHash(seq, prev, d), Content: content, ContentSHA256: d}
}

// recordJSON is a record's wire form: a stream message's data, and one line
// of an export. Exactly one of Content and ContentSHA256 is present.
type recordJSON struct {
	Version       int             `json:"v"`
	Seq           uint64          `json:"seq"`
	Prev          string          `json:"prev"`
	Hash          string          `json:"hash"`
	Content       json.RawMessage `json:"content,omitempty"`
	ContentSHA256 string          `json:"content_sha256,omitempty"`
}

// AppendJSON writes the record's wire form. Content is written as it is,
// byte for byte, so its digest survives the round trip.
func (r *Record) AppendJSON(dst []byte) []byte {
	dst = fmt.Appendf(dst, `{"v":%d,"seq":%d,"prev":"%x","hash":"%x",`, Version, r.Seq, r.Prev[:], r.Hash[:])
	if r.Content != nil {
		dst = append(dst, `"content":`...)
		dst = append(dst, r.Content...)
	} else {
		dst = fmt.Appendf(dst, `"content_sha256":"%x"`, r.ContentSHA256[:])
	}
	return append(dst, '}')
}

// Link returns the record with its content replaced by its digest.
func (r Record) Link() Record {
	r.Content = nil
	return r
}

// ParseRecord decodes a record's wire form and checks its hash. A content
// must be a JSON object (an Entry); its bytes are kept exactly as read.
func ParseRecord(b []byte) (Record, error) {
	var w recordJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if dec.More() {
		return Record{}, fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	if w.Version != Version {
		return Record{}, fmt.Errorf("%w: version %d", ErrMalformed, w.Version)
	}
	if w.Seq == 0 {
		return Record{}, fmt.Errorf("%w: sequence 0", ErrMalformed)
	}
	r := Record{Seq: w.Seq}
	if err := unhex32(w.Prev, &r.Prev); err != nil {
		return Record{}, fmt.Errorf("%w: prev: %w", ErrMalformed, err)
	}
	if err := unhex32(w.Hash, &r.Hash); err != nil {
		return Record{}, fmt.Errorf("%w: hash: %w", ErrMalformed, err)
	}
	switch {
	case w.Content != nil && w.ContentSHA256 == "":
		if len(w.Content) == 0 || w.Content[0] != '{' {
			return Record{}, fmt.Errorf("%w: content is not an object", ErrMalformed)
		}
		r.Content = bytes.Clone(w.Content)
		r.ContentSHA256 = sha256.Sum256(r.Content)
	case w.Content == nil && w.ContentSHA256 != "":
		if err := unhex32(w.ContentSHA256, &r.ContentSHA256); err != nil {
			return Record{}, fmt.Errorf("%w: content_sha256: %w", ErrMalformed, err)
		}
	default:
		return Record{}, fmt.Errorf("%w: needs exactly one of content and content_sha256", ErrMalformed)
	}
	if ChainHash(r.Seq, r.Prev, r.ContentSHA256) != r.Hash {
		return r, fmt.Errorf("record %d: %w", r.Seq, ErrHash)
	}
	return r, nil
}

// Entry decodes the record's content; a link has none.
func (r *Record) Entry() (*Entry, error) {
	if r.Content == nil {
		return nil, fmt.Errorf("record %d is a link: %w", r.Seq, ErrMalformed)
	}
	var e Entry
	if err := json.Unmarshal(r.Content, &e); err != nil {
		return nil, fmt.Errorf("record %d: %w: %w", r.Seq, ErrMalformed, err)
	}
	if e.Kind == "" {
		return nil, fmt.Errorf("record %d: %w: no kind", r.Seq, ErrMalformed)
	}
	return &e, nil
}

func unhex32(s string, out *[32]byte) error {
	if len(s) != 64 {
		return errors.New("not 64 hex digits")
	}
	if _, err := hex.Decode(out[:], []byte(s)); err != nil {
		return err
	}
	if hex.EncodeToString(out[:]) != s {
		return errors.New("not lowercase hex")
	}
	return nil
}

// checkpointInput is what a checkpoint's signature covers.
func checkpointInput(seq uint64, head [32]byte) []byte {
	b := make([]byte, 0, len(domainCheckpoint)+1+8+32)
	b = append(b, domainCheckpoint...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, head[:]...)
}

// signCheckpoint fills a checkpoint entry over (seq, head).
func signCheckpoint(key ed25519.PrivateKey, seq uint64, head [32]byte) Entry {
	pub := key.Public().(ed25519.PublicKey)
	return Entry{Kind: KindCheckpoint, HeadSeq: seq, HeadHash: hex.EncodeToString(head[:]),
		SignerKey: hex.EncodeToString(pub), Signature: ed25519.Sign(key, checkpointInput(seq, head))}
}

// checkCheckpoint verifies a checkpoint entry's signature and returns the
// head it signs.
func checkCheckpoint(e *Entry, pinned ed25519.PublicKey) (uint64, [32]byte, error) {
	var head [32]byte
	if err := unhex32(e.HeadHash, &head); err != nil {
		return 0, head, fmt.Errorf("%w: head hash: %w", ErrCheckpoint, err)
	}
	pub, err := hex.DecodeString(e.SignerKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return 0, head, fmt.Errorf("%w: signer key", ErrCheckpoint)
	}
	if pinned != nil && !bytes.Equal(pinned, pub) {
		return 0, head, fmt.Errorf("%w: signed by %x, not the pinned audit key", ErrCheckpoint, pub[:8])
	}
	if !ed25519.Verify(pub, checkpointInput(e.HeadSeq, head), e.Signature) {
		return 0, head, fmt.Errorf("%w: bad signature", ErrCheckpoint)
	}
	return e.HeadSeq, head, nil
}
