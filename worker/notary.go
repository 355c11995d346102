package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/worker/wire"
)

// KeeperNotary issues receipts with the keys of an enclave.Keeper and
// publishes the evidence they point to in the JetStream evidence bucket
// before any receipt that names it leaves the worker.
type KeeperNotary struct {
	keeper *enclave.Keeper
	kv     jetstream.KeyValue
	now    func() time.Time

	mu        sync.Mutex
	published map[string]bool
}

// NewKeeperNotary returns a Notary over keeper publishing into kv (see
// EnsureEvidenceBucket). It publishes the current epoch's bundle at once.
func NewKeeperNotary(ctx context.Context, keeper *enclave.Keeper, kv jetstream.KeyValue) (*KeeperNotary, error) {
	n := &KeeperNotary{keeper: keeper, kv: kv, now: time.Now, published: map[string]bool{}}
	if err := n.PublishEpoch(ctx, keeper.Current()); err != nil {
		return nil, err
	}
	return n, nil
}

// EnsureEvidenceBucket creates or opens the evidence bucket.
func EnsureEvidenceBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      wire.EvidenceBucket,
		Description: "teegate evidence bundles by id",
		History:     1,
		MaxBytes:    1 << 30,
		TTL:         30 * 24 * time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("opening evidence bucket: %w", err)
	}
	return kv, nil
}

// PublishEpoch stores an epoch's bundle (keeper OnRotate hook).
func (n *KeeperNotary) PublishEpoch(ctx context.Context, e *enclave.Epoch) error {
	return n.publish(ctx, e.ID, e.Raw)
}

func (n *KeeperNotary) publish(ctx context.Context, id string, raw []byte) error {
	n.mu.Lock()
	done := n.published[id]
	n.mu.Unlock()
	if done {
		return nil
	}
	if _, err := n.kv.Put(ctx, id, raw); err != nil {
		return fmt.Errorf("publishing evidence: %w", err)
	}
	n.mu.Lock()
	if len(n.published) > 4096 {
		n.published = map[string]bool{}
	}
	n.published[id] = true
	n.mu.Unlock()
	return nil
}

// EvidenceID implements Notary.
func (n *KeeperNotary) EvidenceID() string { return n.keeper.Current().ID }

// Attest produces evidence bound to a client's challenge nonce.
func (n *KeeperNotary) Attest(ctx context.Context, nonce string) ([]byte, error) {
	_, raw, err := n.keeper.Current().Attest(ctx, attest.ChallengeNonce(nonce))
	if err != nil {
		return nil, fmt.Errorf("attesting for a challenge: %w", err)
	}
	return raw, nil
}

// sign signs r, in fresh mode through the batcher, publishes the evidence
// it names, and returns the envelope and the evidence bytes for inline use.
func (n *KeeperNotary) sign(ctx context.Context, r *attest.Receipt) (*attest.SignedReceipt, []byte, error) {
	if r.Nonce != "" {
		sr, fresh, err := n.keeper.SignFresh(ctx, r)
		if err != nil {
			return nil, nil, fmt.Errorf("signing fresh receipt: %w", err)
		}
		if err := n.publish(ctx, sr.Batch.EvidenceID, fresh); err != nil {
			return nil, nil, err
		}
		return sr, fresh, nil
	}
	sr, err := n.keeper.SignReceipt(r)
	if err != nil {
		return nil, nil, fmt.Errorf("signing receipt: %w", err)
	}
	var raw []byte
	if e, ok := n.keeper.Lookup(sr.Receipt.EvidenceID); ok {
		raw = e.Raw
	}
	return sr, raw, nil
}

func (n *KeeperNotary) receipt(meta Meta, request []byte) attest.Receipt {
	return attest.Receipt{
		Version:       attest.ReceiptVersion,
		RequestID:     meta.RequestID,
		Model:         meta.Model,
		RequestSHA256: sha256.Sum256(request),
		Nonce:         meta.Nonce,
		Created:       n.now().UTC().Truncate(time.Second),
	}
}

// Seal implements Notary.
func (n *KeeperNotary) Seal(ctx context.Context, meta Meta, request, response []byte) (nats.Header, error) {
	r := n.receipt(meta, request)
	r.ResponseSHA256 = sha256.Sum256(response)
	r.Usage = usageOf(response)
	sr, evidence, err := n.sign(ctx, &r)
	if err != nil {
		return nil, err
	}
	h := nats.Header{}
	h.Set(wire.HdrReceipt, sr.HeaderValue())
	h.Set(wire.HdrEvidenceID, sr.Receipt.EvidenceID)
	if meta.Inline && evidence != nil {
		h.Set(wire.HdrEvidence, base64.RawURLEncoding.EncodeToString(evidence))
	}
	return h, nil
}

// Stream implements Notary.
func (n *KeeperNotary) Stream(_ context.Context, meta Meta, request []byte) StreamNotary {
	r := n.receipt(meta, request)
	r.Stream = true
	return &streamNotary{n: n, meta: meta, r: r, h: attest.NewStreamHasher()}
}

type streamNotary struct {
	n     *KeeperNotary
	meta  Meta
	r     attest.Receipt
	h     *attest.StreamHasher
	chunk attest.ChunkMeta
	seen  bool
}

var usageKey = []byte(`"usage":{`)

func (s *streamNotary) Add(payload []byte) {
	_, _ = s.h.Write(payload)
	if !s.seen {
		s.seen = true
		var m struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Created int64  `json:"created"`
			Model   string `json:"model"`
		}
		if json.Unmarshal(payload, &m) == nil {
			s.chunk = attest.ChunkMeta{ID: m.ID, Object: m.Object, Created: m.Created, Model: m.Model}
		}
	}
	if bytes.Contains(payload, usageKey) {
		if u := usageOf(payload); u.TotalTokens > 0 {
			s.r.Usage = u
		}
	}
}

func (s *streamNotary) Finish(ctx context.Context) ([]byte, error) {
	s.r.ResponseSHA256 = s.h.Sum()
	sr, evidence, err := s.n.sign(ctx, &s.r)
	if err != nil {
		return nil, err
	}
	if !s.meta.Inline {
		evidence = nil
	}
	if s.chunk.Object == "" {
		s.chunk.Object = "chat.completion.chunk"
		if s.meta.Op == wire.OpCompletions {
			s.chunk.Object = "text_completion"
		}
		s.chunk.Model = s.meta.Model
		s.chunk.Created = s.r.Created.Unix()
	}
	return attest.AppendReceiptChunk(nil, s.chunk, sr, evidence), nil
}

// usageOf reads the OpenAI "usage" object of a response, zero if absent.
func usageOf(body []byte) attest.Usage {
	var v struct {
		Usage *struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
			TotalTokens      int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	if json.Unmarshal(body, &v) != nil || v.Usage == nil {
		return attest.Usage{}
	}
	return attest.Usage{PromptTokens: v.Usage.PromptTokens, CompletionTokens: v.Usage.CompletionTokens, TotalTokens: v.Usage.TotalTokens}
}
