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
	"strings"
)

// DomainStream starts the input of every stream digest (docs/attestation.md
// §8), so that it can never equal a digest of other bytes.
const DomainStream = "teegate/stream/v2"

// The SSE line prefixes of the framing (docs/attestation.md §8).
const (
	sseData  = "data: "
	sseEvent = "event: "
	// SSEDone is the payload of the event that ends every stream.
	SSEDone = "[DONE]"
)

// StreamHasher computes response_sha256 of a streamed answer
// (docs/attestation.md §8): SHA-256 over "teegate/stream/v2" || 0x00 and
// then, for every line of the stream before the receipt line except comment
// lines, in order, u32be(len(line)) || line, a line being its bytes without
// the terminator. Blank lines and event:, id: and retry: lines are lines
// like data: lines, so the digest covers everything an SSE parser acts on:
// event types, event boundaries, ids and payloads. The producer feeds it
// the events it writes (Event, the same framing as AppendSSEEvent), a
// verifier the lines it read (Line, or StreamDigester). Not safe for
// concurrent use; Event and Line do not allocate.
type StreamHasher struct {
	h   hash.Hash
	n   [4]byte
	sum [32]byte
}

// NewStreamHasher returns the hasher of an empty stream.
func NewStreamHasher() *StreamHasher {
	s := &StreamHasher{h: sha256.New()}
	s.Reset()
	return s
}

// Line adds one line as read from a stream, without its terminator. Comment
// lines (starting with ':') are skipped: SSE parsers ignore them, and the
// gateway writes keep-alive comments the worker does not see.
func (s *StreamHasher) Line(line []byte) {
	if len(line) > 0 && line[0] == ':' {
		return
	}
	s.line("", "", line)
}

// line hashes one line given in three parts, any of them empty.
func (s *StreamHasher) line(prefix, text string, rest []byte) {
	binary.BigEndian.PutUint32(s.n[:], uint32(len(prefix)+len(text)+len(rest)))
	s.h.Write(s.n[:])
	io.WriteString(s.h, prefix)
	io.WriteString(s.h, text)
	s.h.Write(rest)
}

// Event adds the lines of one event exactly as AppendSSEEvent writes it.
func (s *StreamHasher) Event(event string, data []byte) {
	eventLines(event, data, s.line)
}

// EventName adds the "event:" line AppendSSEEvent writes for an event
// name (nothing for ""): the one line of a named receipt event that comes
// before its receipt line and so is hashed.
func (s *StreamHasher) EventName(event string) { eventNameLine(event, s.line) }

// eventNameLine calls line for the "event:" line of an event name, cut at
// its first CR or LF; nothing for an empty name.
func eventNameLine(event string, line func(prefix, text string, rest []byte)) {
	if i := strings.IndexAny(event, "\r\n"); i >= 0 {
		event = event[:i]
	}
	if event != "" {
		line(sseEvent, event, nil)
	}
}

// Sum returns the digest of the lines added so far.
func (s *StreamHasher) Sum() [32]byte {
	s.h.Sum(s.sum[:0])
	return s.sum
}

// Reset clears the hasher for reuse.
func (s *StreamHasher) Reset() {
	s.h.Reset()
	io.WriteString(s.h, DomainStream)
	s.h.Write([]byte{0})
}

// eventLines calls line for each line of an event, in order: "event: "
// with the event type when it is not empty, "data: " with each line of
// data, and the blank line that ends the event. The event type is cut at
// its first CR or LF, and data is split at LF, CRLF and CR, so that no
// input can write a line of its own choosing. Every producer of SSE bytes
// (AppendSSEEvent) and of their digest (StreamHasher.Event) goes through
// here: they cannot disagree.
func eventLines(event string, data []byte, line func(prefix, text string, rest []byte)) {
	eventNameLine(event, line)
	for {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			line(sseData, "", data)
			break
		}
		line(sseData, "", data[:i])
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	line("", "", nil)
}

// AppendSSEEvent appends one SSE event as teegate writes it: an "event: "
// line when event is not empty, one "data: " line per line of data, and a
// blank line, every line ending in LF. Gateway and worker frame stream
// events with it, and StreamHasher.Event hashes exactly its lines.
func AppendSSEEvent(dst []byte, event string, data []byte) []byte {
	eventLines(event, data, func(prefix, text string, rest []byte) {
		dst = append(dst, prefix...)
		dst = append(dst, text...)
		dst = append(dst, rest...)
		dst = append(dst, '\n')
	})
	return dst
}

// AppendSSEDone appends the event that ends a stream, "data: [DONE]" and a
// blank line: after the receipt event, the only thing a stream may carry.
func AppendSSEDone(dst []byte) []byte { return append(dst, sseData+SSEDone+"\n\n"...) }

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
// receipt event of a Responses API stream: "keepalive", the one event type
// OpenAI defines as carrying nothing to act on. Every official SDK path
// tolerates it: openai-go decodes it into its event union with this Type;
// the Node SDK's raw stream yields it, and its responses.stream() helper,
// which throws on any type it does not know (a "teegate.receipt" type
// broke it), skips keepalive events by design.
const ResponsesReceiptEvent = "keepalive"

// AppendResponsesReceiptEvent appends the JSON payload of a Responses API
// stream's receipt event, its last event (sent as "event: keepalive"):
//
//	{"type":"keepalive","sequence_number":seq,
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

// Stream framing errors.
var (
	// ErrNoReceiptEvent reports an SSE stream that ended without a receipt
	// event.
	ErrNoReceiptEvent = errors.New("stream has no receipt event")
	// ErrDataAfterReceipt reports a stream that carries anything after its
	// receipt line but the blank line ending that event and the [DONE]
	// event: nothing after the receipt is covered by it.
	ErrDataAfterReceipt = errors.New("data after the receipt event")
)

// StreamResult is what DigestSSE read from a stream.
type StreamResult struct {
	// Digest is the stream digest of the lines before the receipt line.
	Digest [32]byte
	// Payloads is how many data lines were hashed.
	Payloads int
	Receipt  *SignedReceipt
	// Evidence is the inline bundle of the receipt chunk, if any.
	Evidence []byte
}

// StreamDigester reads a stream line by line as a verifier must
// (docs/attestation.md §8): it hashes every line before the receipt line,
// parses the receipt event, and then admits only the blank line ending it,
// a "data: [DONE]" line and the blank line after that. DigestSSE and the
// streaming client both use it, so their verdicts cannot diverge.
type StreamDigester struct {
	h     *StreamHasher
	res   StreamResult
	state int
}

// Digester states after the receipt line.
const (
	sdBefore  = iota // hashing, no receipt yet
	sdReceipt        // the receipt line was read
	sdBlank          // ... and the blank line ending its event
	sdDone           // ... and the [DONE] line
	sdEnd            // ... and the blank line ending [DONE]: nothing may follow
)

// NewStreamDigester returns a digester at the start of a stream.
func NewStreamDigester() *StreamDigester { return &StreamDigester{h: NewStreamHasher()} }

// Line processes one line without its terminator. It returns the result
// when this line is the receipt line (nil otherwise), and an error for a
// malformed receipt event or anything but the permitted tail after it
// (ErrDataAfterReceipt). The result's Receipt is unverified.
func (d *StreamDigester) Line(line []byte) (*StreamResult, error) {
	switch d.state {
	case sdBefore:
		if payload, ok := ssePayload(line); ok && IsReceiptEvent(payload) {
			sr, ev, err := ParseReceiptChunk(payload)
			if err != nil {
				return nil, fmt.Errorf("reading SSE receipt: %w", err)
			}
			d.res.Digest, d.res.Receipt, d.res.Evidence = d.h.Sum(), sr, ev
			d.state = sdReceipt
			return &d.res, nil
		}
		if _, ok := ssePayload(line); ok {
			d.res.Payloads++
		}
		d.h.Line(line)
		return nil, nil
	case sdReceipt, sdDone:
		if len(line) == 0 {
			d.state++
			return nil, nil
		}
	case sdBlank:
		if p, ok := ssePayload(line); ok && string(p) == SSEDone {
			d.state = sdDone
			return nil, nil
		}
	}
	return nil, fmt.Errorf("reading SSE stream: line %.40q after the receipt: %w", line, ErrDataAfterReceipt)
}

// Seen reports whether the receipt line was read.
func (d *StreamDigester) Seen() bool { return d.state != sdBefore }

// End reports the end of the stream: ErrNoReceiptEvent when no receipt
// line came.
func (d *StreamDigester) End() (*StreamResult, error) {
	if d.state == sdBefore {
		return nil, fmt.Errorf("reading SSE stream: %w", ErrNoReceiptEvent)
	}
	return &d.res, nil
}

// ssePayload is the value of a "data:" line: the rest of the line after
// "data:" and at most one space.
func ssePayload(line []byte) ([]byte, bool) {
	p, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok {
		return nil, false
	}
	return bytes.TrimPrefix(p, []byte(" ")), true
}

// DigestSSE reads a whole SSE stream (text/event-stream as the client
// received it) with a StreamDigester: the digest of every line before the
// receipt line, the receipt event, and nothing after it but [DONE]. Lines
// may end in LF, CRLF or CR.
func DigestSSE(r io.Reader) (*StreamResult, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxReceiptSize)
	sc.Split(scanSSELines)
	d := NewStreamDigester()
	for sc.Scan() {
		if _, err := d.Line(sc.Bytes()); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading SSE stream: %w", err)
	}
	return d.End()
}

// IsReceiptEvent reports whether an SSE data payload is the receipt event:
// a JSON object with a top-level "teegate_receipt" member. A
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
