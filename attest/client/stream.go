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
// an attest.StreamDigester (the one attest.DigestSSE uses) computes the
// stream digest and polices what follows the receipt. A line's bytes are
// released only after the line was processed, so the receipt event reaches
// the caller only once it verified, a line after it that is not the
// permitted tail never reaches the caller, and a failure is returned in
// its place.
type streamReader struct {
	body   io.ReadCloser
	finish finishFunc
	// invalidate withdraws a verdict already given, when the stream goes
	// on with data its receipt does not cover.
	invalidate func()
	d          *attest.StreamDigester

	buf    []byte // read buffer
	out    []byte // storage for released bytes
	ready  []byte // released, not yet returned
	line   []byte // the current, incomplete line
	raw    *bytes.Buffer
	skipLF bool // the last terminator was CR: a following LF belongs to it
	err    error
}

func newStreamReader(body io.ReadCloser, keepRaw bool, finish finishFunc, invalidate func()) *streamReader {
	s := &streamReader{body: body, finish: finish, invalidate: invalidate, d: attest.NewStreamDigester(), buf: make([]byte, 32<<10)}
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
	base := 0 // where chunk starts in raw
	if s.raw != nil {
		base = s.raw.Len()
		s.raw.Write(chunk)
	}
	start := len(chunk)
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
		// The raw bytes through this line's terminator: a transcript
		// keeps the stream up to its receipt line.
		lineEnd := base + start - len(chunk) + i + 1
		if s.err = s.processLine(s.line, lineEnd); s.err != nil {
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
		end := 0
		if s.raw != nil {
			end = s.raw.Len()
		}
		if err := s.processLine(s.line, end); err != nil {
			return err
		}
	}
	if !s.d.Seen() {
		return fail("receipt", fmt.Errorf("%w: %w", ErrNoReceipt, attest.ErrNoReceiptEvent))
	}
	return io.EOF
}

// processLine feeds one line to the digester; rawEnd is where the line
// and its terminator end in raw (when kept).
func (s *streamReader) processLine(line []byte, rawEnd int) error {
	if !s.d.Seen() {
		if p, ok := bytes.CutPrefix(line, []byte("data:")); ok && string(bytes.TrimPrefix(p, []byte(" "))) == attest.SSEDone {
			// SDKs stop reading at [DONE]: the receipt must come before it.
			return fail("receipt", fmt.Errorf("%w: %w", ErrNoReceipt, attest.ErrNoReceiptEvent))
		}
	}
	res, err := s.d.Line(line)
	if err != nil {
		if s.d.Seen() {
			s.invalidate()
			return fail("stream", err)
		}
		return fail("receipt", err)
	}
	if res == nil {
		return nil
	}
	var raw []byte
	if s.raw != nil {
		raw = bytes.Clone(s.raw.Bytes()[:rawEnd])
	}
	return s.finish(res.Receipt, res.Evidence, res.Digest, raw)
}
