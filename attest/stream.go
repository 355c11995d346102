package attest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
)

// StreamHasher computes response_sha256 of a streamed completion: SHA-256
// over, for each SSE data payload before the receipt event, in order,
// u32be(len(payload)) || payload. A payload is the value of one "data:"
// line: the bytes after "data:" and one optional space, without the line
// terminator. The length prefix keeps payload boundaries in the digest, so
// re-chunking the same bytes changes it. Write does not allocate. Not safe
// for concurrent use.
type StreamHasher struct {
	h   hash.Hash
	n   [4]byte
	sum [32]byte
}

// NewStreamHasher returns an empty hasher.
func NewStreamHasher() *StreamHasher { return &StreamHasher{h: sha256.New()} }

// Write adds one data payload. It always returns len(payload), nil.
func (s *StreamHasher) Write(payload []byte) (int, error) {
	binary.BigEndian.PutUint32(s.n[:], uint32(len(payload)))
	s.h.Write(s.n[:])
	s.h.Write(payload)
	return len(payload), nil
}

// Sum returns the digest of the payloads written so far.
func (s *StreamHasher) Sum() [32]byte {
	s.h.Sum(s.sum[:0])
	return s.sum
}

// Reset clears the hasher for reuse.
func (s *StreamHasher) Reset() { s.h.Reset() }

// ChunkMeta are the OpenAI members of the final receipt chunk.
type ChunkMeta struct {
	// ID is the completion id shared by every chunk of the stream.
	ID string
	// Object is "chat.completion.chunk" or "text_completion".
	Object string
	// Created is the Unix time of the stream's chunks.
	Created int64
	Model   string
}

// AppendReceiptChunk appends the JSON payload of the receipt event, the last
// data event before [DONE]:
//
//	{"id":…,"object":…,"created":…,"model":…,"choices":[],
//	 "teegate_receipt":{envelope},"teegate_evidence":{bundle}}
//
// An empty choices array is what OpenAI itself sends in a usage-only chunk,
// so the official SDKs accept it. evidence, if non-nil, must be canonical
// bundle bytes (a JSON object) and is embedded verbatim.
func AppendReceiptChunk(dst []byte, m ChunkMeta, sr *SignedReceipt, evidence []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendJSONString(dst, m.ID)
	dst = append(dst, `,"object":`...)
	dst = appendJSONString(dst, m.Object)
	dst = append(dst, `,"created":`...)
	if m.Created < 0 {
		m.Created = 0
	}
	dst = appendJSONUint(dst, uint64(m.Created))
	dst = append(dst, `,"model":`...)
	dst = appendJSONString(dst, m.Model)
	dst = append(dst, `,"choices":[],"`+ChunkReceiptMember+`":`...)
	dst = sr.AppendJSON(dst)
	if evidence != nil {
		dst = append(dst, `,"`+ChunkEvidenceMember+`":`...)
		dst = append(dst, evidence...)
	}
	return append(dst, '}')
}

// ResponsesReceiptEvent is the SSE event name and the "type" of the
// receipt event of a Responses API stream. The official SDKs dispatch on
// the type and pass an unknown one through: openai-go decodes it into its
// event union with this Type, the Node SDK yields it as an object.
const ResponsesReceiptEvent = "teegate.receipt"

// AppendResponsesReceiptEvent appends the JSON payload of a Responses API
// stream's receipt event, its last event (sent as "event: teegate.receipt"):
//
//	{"type":"teegate.receipt","sequence_number":seq,
//	 "teegate_receipt":{envelope},"teegate_evidence":{bundle}}
//
// seq continues the stream's sequence numbers. Like the chat receipt chunk
// it is found by its top-level teegate_receipt member (IsReceiptEvent), and
// only that member and teegate_evidence are covered by anything. evidence,
// if non-nil, must be canonical bundle bytes and is embedded verbatim.
func AppendResponsesReceiptEvent(dst []byte, seq int64, sr *SignedReceipt, evidence []byte) []byte {
	dst = append(dst, `{"type":"`+ResponsesReceiptEvent+`","sequence_number":`...)
	if seq < 0 {
		seq = 0
	}
	dst = appendJSONUint(dst, uint64(seq))
	dst = append(dst, `,"`+ChunkReceiptMember+`":`...)
	dst = sr.AppendJSON(dst)
	if evidence != nil {
		dst = append(dst, `,"`+ChunkEvidenceMember+`":`...)
		dst = append(dst, evidence...)
	}
	return append(dst, '}')
}

// ParseReceipt reads a signed receipt from any of its delivery forms: the
// Teegate-Receipt header value (base64url envelope), the envelope JSON, the
// receipt chunk payload, or the chunk's whole "data: …" line.
func ParseReceipt(b []byte) (*SignedReceipt, error) {
	sr, _, err := ParseReceiptChunk(b)
	return sr, err
}

// ParseReceiptChunk is ParseReceipt that also returns the inline evidence
// bundle of a receipt chunk (nil when absent).
func ParseReceiptChunk(b []byte) (*SignedReceipt, []byte, error) {
	if len(b) > MaxReceiptSize {
		return nil, nil, fmt.Errorf("parsing receipt of %d bytes: %w", len(b), ErrMalformed)
	}
	b = bytes.TrimSpace(b)
	if rest, ok := bytes.CutPrefix(b, []byte("data:")); ok {
		b = bytes.TrimPrefix(rest, []byte(" "))
	}
	if len(b) == 0 {
		return nil, nil, fmt.Errorf("parsing receipt: empty: %w", ErrMalformed)
	}
	if b[0] != '{' {
		dec, err := decodeHeader(b)
		if err != nil {
			return nil, nil, fmt.Errorf("parsing receipt header: %w", ErrMalformed)
		}
		b = dec
	}
	// The envelope always starts with one of its own members (it is written
	// sorted): decode it directly and skip the generic parse.
	if bytes.HasPrefix(b, []byte(`{"receipt":`)) || bytes.HasPrefix(b, []byte(`{"batch":`)) {
		var sr SignedReceipt
		if err := sr.UnmarshalJSON(b); err != nil {
			return nil, nil, fmt.Errorf("parsing receipt: %w", err)
		}
		return &sr, nil, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, nil, fmt.Errorf("parsing receipt: %w: %w", ErrMalformed, err)
	}
	if raw, ok := top[ChunkReceiptMember]; ok {
		var sr SignedReceipt
		if err := sr.UnmarshalJSON(raw); err != nil {
			return nil, nil, fmt.Errorf("parsing receipt chunk: %w", err)
		}
		var ev []byte
		if e, ok := top[ChunkEvidenceMember]; ok && !bytes.Equal(e, []byte("null")) {
			ev = bytes.Clone(e)
		}
		return &sr, ev, nil
	}
	var sr SignedReceipt
	if err := sr.UnmarshalJSON(b); err != nil {
		return nil, nil, fmt.Errorf("parsing receipt: %w", err)
	}
	return &sr, nil, nil
}

// decodeHeader is DecodeBase64URL on bytes, without copying them to a
// string first.
func decodeHeader(b []byte) ([]byte, error) {
	if bytes.IndexByte(b, '\r') >= 0 || bytes.IndexByte(b, '\n') >= 0 { // vectorized, unlike ContainsAny
		return nil, errLineBreak
	}
	out := make([]byte, base64.RawURLEncoding.DecodedLen(len(b)))
	n, err := base64.RawURLEncoding.Strict().Decode(out, b)
	if err != nil {
		return nil, err
	}
	return out[:n], nil
}

// ErrNoReceiptEvent reports an SSE stream that ended without a receipt
// event.
var ErrNoReceiptEvent = errors.New("stream has no receipt event")

// StreamResult is what DigestSSE read from a stream.
type StreamResult struct {
	// Digest is the stream digest of the payloads before the receipt event.
	Digest [32]byte
	// Payloads is how many payloads were hashed.
	Payloads int
	Receipt  *SignedReceipt
	// Evidence is the inline bundle of the receipt chunk, if any.
	Evidence []byte
}

// DigestSSE reads an SSE stream (text/event-stream as the client received
// it), hashes every data payload up to the receipt event and parses that
// event. Lines may end in LF, CRLF or CR; lines other than "data:" lines
// (comments, event:, id:, blank) are not hashed. The receipt event is the
// first payload that is a JSON object with a "teegate_receipt" member;
// anything after it ("[DONE]") is ignored.
func DigestSSE(r io.Reader) (*StreamResult, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxReceiptSize)
	sc.Split(scanSSELines)
	h := NewStreamHasher()
	res := &StreamResult{}
	for sc.Scan() {
		line := sc.Bytes()
		payload, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue
		}
		payload = bytes.TrimPrefix(payload, []byte(" "))
		if IsReceiptEvent(payload) {
			sr, ev, err := ParseReceiptChunk(payload)
			if err != nil {
				return nil, fmt.Errorf("reading SSE receipt: %w", err)
			}
			res.Digest, res.Receipt, res.Evidence = h.Sum(), sr, ev
			return res, nil
		}
		h.Write(payload)
		res.Payloads++
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading SSE stream: %w", err)
	}
	return nil, fmt.Errorf("reading SSE stream: %w", ErrNoReceiptEvent)
}

// IsReceiptEvent reports whether an SSE data payload is the receipt event:
// a JSON object with a top-level "teegate_receipt" member. DigestSSE and
// the streaming client both use it, so their digests cannot diverge. A
// cheap pre-check comes first, then a real top-level member test, so a
// completion that merely mentions the member name is not mistaken for the
// receipt.
func IsReceiptEvent(payload []byte) bool {
	if len(payload) == 0 || payload[0] != '{' || !bytes.Contains(payload, []byte(`"`+ChunkReceiptMember+`"`)) {
		return false
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(payload, &top) != nil {
		return false
	}
	_, ok := top[ChunkReceiptMember]
	return ok
}

// scanSSELines splits on LF, CRLF or CR (the SSE line terminators).
func scanSSELines(data []byte, atEOF bool) (int, []byte, error) {
	for i, c := range data {
		switch c {
		case '\n':
			return i + 1, data[:i], nil
		case '\r':
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			if atEOF {
				return i + 1, data[:i], nil
			}
			return 0, nil, nil // need one more byte to tell CR from CRLF
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
