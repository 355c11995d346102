package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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
	kv     EvidenceStore
	now    func() time.Time

	mu        sync.Mutex
	published map[string]bool
}

// NewKeeperNotary returns a Notary over keeper publishing into kv (see
// EnsureEvidenceBucket). It publishes the current epoch's bundle at once.
func NewKeeperNotary(ctx context.Context, keeper *enclave.Keeper, kv EvidenceStore) (*KeeperNotary, error) {
	n := &KeeperNotary{keeper: keeper, kv: kv, now: time.Now, published: map[string]bool{}}
	if err := n.PublishEpoch(ctx, keeper.Current()); err != nil {
		return nil, err
	}
	return n, nil
}

// EvidenceStore is where a notary publishes bundles: the evidence bucket,
// or anything that forwards Put to it.
type EvidenceStore interface {
	Put(ctx context.Context, key string, value []byte) (uint64, error)
}

// EnsureEvidenceBucket creates or opens the evidence bucket.
func EnsureEvidenceBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := wire.EnsureBucket(ctx, js, wire.EvidenceConfig())
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
	if meta.Op == wire.OpResponses {
		r.Usage = responsesUsageOf(response)
	} else {
		r.Usage = usageOf(response)
	}
	r.UsageSource = attest.UsageFromEngine
	if r.Usage == (attest.Usage{}) {
		r.UsageSource = attest.UsageNone
	}
	sr, _, err := n.sign(ctx, &r)
	if err != nil {
		return nil, err
	}
	h := nats.Header{}
	h.Set(wire.HdrReceipt, sr.HeaderValue())
	// The bundle itself never rides in a header, inline or not: at ~18 KB
	// it overflows Node's fetch (16 KiB of headers) and common proxies
	// (8 KiB). Clients fetch it by this id (docs/attestation.md §7.4).
	h.Set(wire.HdrEvidenceID, sr.Receipt.EvidenceID)
	return h, nil
}

// Stream implements Notary.
func (n *KeeperNotary) Stream(_ context.Context, meta Meta, request []byte) StreamNotary {
	r := n.receipt(meta, request)
	r.Stream = true
	r.UsageSource = attest.UsageNone
	return &streamNotary{n: n, meta: meta, r: r, h: attest.NewStreamHasher()}
}

type streamNotary struct {
	n      *KeeperNotary
	meta   Meta
	r      attest.Receipt
	h      *attest.StreamHasher
	chunk  attest.ChunkMeta
	seen   bool
	events int64 // payloads added: the receipt event's sequence_number in a Responses stream
}

// mayHaveUsage filters stream payloads before usageOf, which costs more
// than hashing a chunk. It looks for "usage" between unescaped quotes: an
// engine's usage member (OpenAI-compatible servers write it lowercase)
// always matches, while content text rarely does, its quotes being escaped
// (\"usage\"); a false match only costs a scan. Searching for the word
// first keeps bytes.Index on its fast path: quotes are everywhere in JSON.
func mayHaveUsage(p []byte) bool {
	for i := 0; ; {
		k := bytes.Index(p[i:], usageWord)
		if k < 0 {
			return false
		}
		k += i
		if k > 0 && p[k-1] == '"' && k+len(usageWord) < len(p) && p[k+len(usageWord)] == '"' {
			return true
		}
		i = k + 1
	}
}

var usageWord = []byte("usage")

// Add hashes the event as the gateway frames it (attest.AppendSSEEvent
// with the name sent in wire.HdrEvent).
func (s *streamNotary) Add(event string, payload []byte) {
	s.h.Event(event, payload)
	s.events++
	if s.meta.Op == wire.OpResponses {
		// The usage of a Responses stream is in its terminal event's
		// response object.
		switch event {
		case "response.completed", "response.incomplete", "response.failed":
			var v [1]span
			if topLevel(payload, responseMember, v[:]) && !v[0].absent() {
				if u := responsesUsageOf(payload[v[0].start:v[0].end]); u.TotalTokens > 0 {
					s.r.Usage, s.r.UsageSource = u, attest.UsageFromEngine
				}
			}
		}
		return
	}
	if !s.seen {
		s.seen = true
		if m, ok := chunkMetaOf(payload); ok {
			s.chunk = m
		}
	}
	if mayHaveUsage(payload) {
		if u := usageOf(payload); u.TotalTokens > 0 {
			s.r.Usage, s.r.UsageSource = u, attest.UsageFromEngine
		}
	}
}

// Usage implements StreamNotary.
func (s *streamNotary) Usage(payload []byte) {
	if u := usageOf(payload); u.TotalTokens > 0 {
		s.r.Usage, s.r.UsageSource = u, attest.UsageRequested
	}
}

func (s *streamNotary) Finish(ctx context.Context) ([]byte, error) {
	if s.meta.Op == wire.OpResponses {
		// The receipt event's "event:" line comes before its receipt
		// line, so the digest covers it (docs/attestation.md §8).
		s.h.EventName(attest.ResponsesReceiptEvent)
	}
	s.r.ResponseSHA256 = s.h.Sum()
	sr, evidence, err := s.n.sign(ctx, &s.r)
	if err != nil {
		return nil, err
	}
	if !s.meta.Inline {
		evidence = nil
	}
	if s.meta.Op == wire.OpResponses {
		return attest.AppendResponsesReceiptEvent(nil, s.events, sr, evidence), nil
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

// The scanner below reads a few top-level members of an engine's JSON body
// the way decoding it with encoding/json into a struct would (the last
// member whose name folds to the field name, counters and strings decoded
// the same way, any type mismatch voiding the whole result) without decoding
// the body: decoding a 4 KB completion cost more than signing its receipt.
// It jumps over string contents with IndexByte and decodes only the values
// it returns. It does not validate the rest of the body, so a malformed body
// may still yield values where a full decode would fail; engines send JSON.

// usageOf reads the OpenAI "usage" object of a response, zero if absent or
// if a counter is outside what a receipt can carry (negative, or above
// 2^53-1): an engine's bad accounting must not turn a finished completion
// into a signing failure.
func usageOf(body []byte) attest.Usage { return usageWith(body, counterMembers) }

// responsesUsageOf reads the usage of a Responses API object:
// input_tokens, output_tokens and total_tokens, which a receipt carries as
// prompt_tokens, completion_tokens and total_tokens.
func responsesUsageOf(body []byte) attest.Usage { return usageWith(body, responsesCounterMembers) }

func usageWith(body []byte, counters []member) attest.Usage {
	var v [1]span
	if !topLevel(body, usageMember, v[:]) || v[0].absent() {
		return attest.Usage{}
	}
	obj := body[v[0].start:v[0].end]
	var c [3]span
	if !topLevel(obj, counters, c[:]) {
		return attest.Usage{}
	}
	p, _ := intValue(obj, c[0])
	q, _ := intValue(obj, c[1])
	t, _ := intValue(obj, c[2])
	u := attest.Usage{PromptTokens: p, CompletionTokens: q, TotalTokens: t}
	if !u.Valid() {
		return attest.Usage{}
	}
	return u
}

// chunkMetaOf reads the OpenAI members of a stream chunk; ok is false where
// a full decode would fail.
func chunkMetaOf(payload []byte) (m attest.ChunkMeta, ok bool) {
	var v [4]span
	if !topLevel(payload, chunkMembers, v[:]) {
		return attest.ChunkMeta{}, false
	}
	m.ID, _ = stringValue(payload, v[0])
	m.Object, _ = stringValue(payload, v[1])
	m.Created, _ = intValue(payload, v[2])
	m.Model, ok = stringValue(payload, v[3])
	return m, ok
}

// member is a top-level member to find and the Go type it decodes into:
// 'o' a pointer to a struct (an object, or null resetting it), 'i' an
// int64, 's' a string (null leaves either unchanged).
type member struct {
	name string
	kind byte
}

var (
	usageMember    = []member{{"usage", 'o'}}
	counterMembers = []member{{"prompt_tokens", 'i'}, {"completion_tokens", 'i'}, {"total_tokens", 'i'}}
	// Responses API: the same three counters under their names there.
	responsesCounterMembers = []member{{"input_tokens", 'i'}, {"output_tokens", 'i'}, {"total_tokens", 'i'}}
	responseMember          = []member{{"response", 'o'}}
	chunkMembers            = []member{{"id", 's'}, {"object", 's'}, {"created", 'i'}, {"model", 's'}}
)

// span is a value's bounds in a body; start < 0 when the member is absent.
type span struct{ start, end int }

func (s span) absent() bool { return s.start < 0 }

// topLevel fills vals[i] with the bounds of the value of the last member
// of body's top-level object whose name matches members[i]. It returns
// false where a full decode would fail: body is not an object (or null), or
// any matching member, not only the last, has a value of the wrong type.
func topLevel(body []byte, members []member, vals []span) bool {
	for i := range vals {
		vals[i] = span{-1, -1}
	}
	i := skipSpace(body, 0)
	if bytes.HasPrefix(body[i:], []byte("null")) && skipSpace(body, i+4) == len(body) {
		return true // decoding null into a struct is a no-op
	}
	if i >= len(body) || body[i] != '{' {
		return false
	}
	i++
	for {
		i = skipSpace(body, i)
		if i >= len(body) {
			return false
		}
		switch body[i] {
		case '}':
			return true
		case ',':
			i++
			continue
		case '"':
		default:
			return false
		}
		j := stringEnd(body, i+1)
		if j < 0 {
			return false
		}
		name := body[i+1 : j]
		i = skipSpace(body, j+1)
		if i >= len(body) || body[i] != ':' {
			return false
		}
		v := skipSpace(body, i+1)
		end := valueEnd(body, v)
		if end < 0 {
			return false
		}
		for k, m := range members {
			if !nameIs(name, m.name) {
				continue
			}
			val := body[v:end]
			null := string(val) == "null"
			switch {
			case m.kind == 'o' && null:
				vals[k] = span{-1, -1}
			case null:
			case m.kind == 'o' && val[0] == '{',
				m.kind == 's' && val[0] == '"':
				vals[k] = span{v, end}
			case m.kind == 'i':
				if _, ok := intValue(body, span{v, end}); !ok {
					return false
				}
				vals[k] = span{v, end}
			default:
				return false
			}
		}
		i = end
	}
}

// valueEnd returns the index just past the JSON value starting at i, or -1.
// Containers are matched by depth alone; strings are skipped whole.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		j := stringEnd(b, i+1)
		if j < 0 {
			return -1
		}
		return j + 1
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				j := stringEnd(b, i+1)
				if j < 0 {
					return -1
				}
				i = j
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	// A number or literal runs to the next delimiter.
	j := i
	for j < len(b) && !isDelim(b[j]) {
		j++
	}
	if j == i {
		return -1
	}
	return j
}

func isDelim(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

// stringEnd returns the index of the quote closing a JSON string whose
// contents start at from, or -1: the first quote preceded by an even number
// of backslashes.
func stringEnd(b []byte, from int) int {
	for {
		k := bytes.IndexByte(b[from:], '"')
		if k < 0 {
			return -1
		}
		q := from + k
		n := 0
		for p := q - 1; p >= from && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q
		}
		from = q + 1
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// nameIs matches a raw member name as encoding/json matches a struct field:
// after unescaping, case-insensitively (Unicode simple folding).
func nameIs(raw []byte, name string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return len(raw) >= len(name) && bytes.EqualFold(raw, []byte(name))
	}
	var s string
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	return json.Unmarshal(q, &s) == nil && strings.EqualFold(s, name)
}

// intValue decodes an int64 value as encoding/json would: absent is 0;
// anything but an integer literal in range fails.
func intValue(b []byte, sp span) (int64, bool) {
	if sp.absent() {
		return 0, true
	}
	v := b[sp.start:sp.end]
	for i, c := range v {
		if !(c >= '0' && c <= '9' || c == '-' && i == 0) {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

// stringValue decodes a string value as encoding/json would: absent is "".
func stringValue(b []byte, sp span) (string, bool) {
	if sp.absent() {
		return "", true
	}
	v := b[sp.start:sp.end]
	switch {
	case len(v) < 2 || v[0] != '"':
		return "", false
	case bytes.IndexByte(v, '\\') < 0 && utf8.Valid(v):
		return string(v[1 : len(v)-1]), true
	}
	var s string
	err := json.Unmarshal(v, &s)
	return s, err == nil
}
