package client

import (
	"bytes"
	"fmt"
	"io"

	"github.com/teegate/teegate/attest"
)

// finishFunc verifies a stream once its receipt event arrived: the parsed
// receipt, the chunk's inline bundle (nil if none), the digest of the
// payloads before it, and the raw bytes read so far (nil unless kept).
type finishFunc func(sr *attest.SignedReceipt, inline []byte, digest [32]byte, raw []byte) error

// streamReader passes an SSE body through to the caller line by line while
// computing the stream digest exactly as attest.DigestSSE does. A line's
// bytes are released only after the line was processed, so the receipt
// event reaches the caller only once it verified, and a failure is
// returned in its place.
type streamReader struct {
	body   io.ReadCloser
	finish finishFunc
	// invalidate withdraws a verdict already given, when the stream goes
	// on with data its receipt does not cover.
	invalidate func()
	h          *attest.StreamHasher

	buf    []byte // read buffer
	out    []byte // storage for released bytes
	ready  []byte // released, not yet returned
	line   []byte // the current, incomplete line
	raw    *bytes.Buffer
	skipLF bool // the last terminator was CR: a following LF belongs to it
	seen   bool // the receipt event verified
	err    error
}

func newStreamReader(body io.ReadCloser, keepRaw bool, finish finishFunc, invalidate func()) *streamReader {
	s := &streamReader{body: body, finish: finish, invalidate: invalidate, h: attest.NewStreamHasher(), buf: make([]byte, 32<<10)}
	if keepRaw {
		s.raw = new(bytes.Buffer)
	}
	return s
}

func (s *streamReader) Read(p []byte) (int, error) {
	for len(s.ready) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		s.fill()
	}
	n := copy(p, s.ready)
	s.ready = s.ready[n:]
	return n, nil
}

// Close closes the underlying body.
func (s *streamReader) Close() error { return s.body.Close() }

// fill reads once from the body and processes every complete line.
func (s *streamReader) fill() {
	n, rerr := s.body.Read(s.buf)
	chunk := s.buf[:n]
	if s.raw != nil {
		s.raw.Write(chunk)
	}
	out := s.out[:0]
	for len(chunk) > 0 {
		if s.skipLF {
			s.skipLF = false
			if chunk[0] == '\n' {
				out = append(out, '\n')
				chunk = chunk[1:]
				continue
			}
		}
		i := bytes.IndexAny(chunk, "\r\n")
		if i < 0 {
			s.line = append(s.line, chunk...)
			if len(s.line) > attest.MaxReceiptSize {
				s.err = fail("stream", fmt.Errorf("line over %d bytes: %w", attest.MaxReceiptSize, ErrTooLarge))
			}
			break
		}
		s.line = append(s.line, chunk[:i]...)
		if s.err = s.processLine(s.line); s.err != nil {
			break
		}
		out = append(append(out, s.line...), chunk[i])
		s.skipLF = chunk[i] == '\r'
		s.line = s.line[:0]
		chunk = chunk[i+1:]
	}
	if s.err == nil && rerr != nil {
		s.err = rerr
		if rerr == io.EOF {
			s.err = s.atEOF()
			if s.err == nil || s.err == io.EOF {
				out = append(out, s.line...)
				s.line = s.line[:0]
			}
		}
	}
	s.out, s.ready = out, out
}

// atEOF processes a last unterminated line and requires the receipt.
func (s *streamReader) atEOF() error {
	if len(s.line) > 0 {
		if err := s.processLine(s.line); err != nil {
			return err
		}
	}
	if !s.seen {
		return fail("receipt", fmt.Errorf("%w: %w", ErrNoReceipt, attest.ErrNoReceiptEvent))
	}
	return io.EOF
}

func (s *streamReader) processLine(line []byte) error {
	payload, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok {
		return nil
	}
	payload = bytes.TrimPrefix(payload, []byte(" "))
	if s.seen {
		if string(payload) == "[DONE]" {
			return nil
		}
		s.invalidate()
		return fail("stream", ErrDataAfterReceipt)
	}
	if string(payload) == "[DONE]" {
		// SDKs stop reading at [DONE]: the receipt must come before it.
		return fail("receipt", fmt.Errorf("%w: %w", ErrNoReceipt, attest.ErrNoReceiptEvent))
	}
	if !attest.IsReceiptEvent(payload) {
		s.h.Write(payload)
		return nil
	}
	sr, inline, err := attest.ParseReceiptChunk(payload)
	if err != nil {
		return fail("receipt", err)
	}
	var raw []byte
	if s.raw != nil {
		raw = bytes.Clone(s.raw.Bytes())
	}
	if err := s.finish(sr, inline, s.h.Sum(), raw); err != nil {
		return err
	}
	s.seen = true
	return nil
}
