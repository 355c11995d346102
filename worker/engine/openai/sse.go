package openai

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxEventBytes bounds one SSE event's data when no limit is
// configured. Chat chunks are well under a kilobyte; a megabyte leaves room
// for logprobs and large tool-call deltas while keeping a misbehaving engine
// from growing the worker's memory without bound.
const DefaultMaxEventBytes = 1 << 20

const (
	sseInitialBuf = 8 << 10
	sseMinRead    = 4 << 10
	// sseLineSlack is what a line may carry beyond the event data limit: a
	// field name, the colon and one space ("data: ").
	sseLineSlack = 64
	// sseMaxEmptyReads guards against readers that return (0, nil) forever.
	sseMaxEmptyReads = 100
)

// ErrEventTooLarge is returned when one SSE line or one event's data exceeds
// the configured limit.
var ErrEventTooLarge = errors.New("SSE event exceeds size limit")

// utf8BOM is skipped once at the start of a stream (WHATWG HTML, 9.2.6:
// "a single leading U+FEFF BYTE ORDER MARK character must be ignored").
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// SSEReader reads the data payloads of a text/event-stream body, following
// the WHATWG event-stream interpretation rules (HTML Living Standard, section
// 9.2.6): lines end in CRLF, LF or a lone CR; lines starting with ':' are
// comments; "data" fields of one event are joined with '\n'; the last
// "event" field names the event (Event); the id and retry fields (and
// unknown ones) are ignored; an event whose data
// buffer is empty is not dispatched; an incomplete event at end of input is
// discarded. It does not interpret payloads: "[DONE]" is returned like any
// other.
//
// An SSEReader is not safe for concurrent use.
type SSEReader struct {
	src       io.Reader
	buf       []byte
	r, w      int // unread bytes are buf[r:w]
	maxData   int
	maxLine   int
	data      []byte // current event's data buffer, each value followed by '\n'
	hasData   bool
	event     []byte // current event's type buffer (the "event" field)
	skipLF    bool   // the last line ended in CR: a following LF belongs to it
	bomDone   bool
	srcErr    error // first error from src, surfaced once buffered lines are used
	fail      error // sticky error returned by Next
	emptyRead int
}

// NewSSEReader returns a reader of src's events. maxEventBytes bounds one
// event's data (and, with a small allowance for the field name, one line);
// zero or less means DefaultMaxEventBytes.
func NewSSEReader(src io.Reader, maxEventBytes int) *SSEReader {
	if maxEventBytes <= 0 {
		maxEventBytes = DefaultMaxEventBytes
	}
	return &SSEReader{src: src, maxData: maxEventBytes, maxLine: maxEventBytes + sseLineSlack}
}

// Next returns the data of the next dispatched event, without the trailing
// newline the spec removes. The slice is valid until the next call. At the end
// of input it returns io.EOF (any incomplete event is discarded, as the spec
// requires); a line or event over the limit yields ErrEventTooLarge; a read
// error from the source is returned wrapped. Errors are sticky.
func (s *SSEReader) Next() ([]byte, error) {
	if s.fail != nil {
		return nil, s.fail
	}
	s.data = s.data[:0]
	s.hasData = false
	s.event = s.event[:0]
	for {
		line, err := s.readLine()
		if err != nil {
			s.fail = err
			return nil, err
		}
		if len(line) == 0 {
			if !s.hasData {
				s.event = s.event[:0] // the spec resets the type buffer too
				continue
			}
			return s.data[:len(s.data)-1], nil
		}
		if line[0] == ':' {
			continue
		}
		name, value := line, line[len(line):]
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			name, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		if string(name) == "event" {
			if len(value) > s.maxLine {
				s.fail = fmt.Errorf("reading event name: %w", ErrEventTooLarge)
				return nil, s.fail
			}
			s.event = append(s.event[:0], value...)
			continue
		}
		if string(name) != "data" {
			continue
		}
		if len(s.data)+len(value) > s.maxData {
			s.fail = fmt.Errorf("reading event data: %w", ErrEventTooLarge)
			return nil, s.fail
		}
		s.data = append(s.data, value...)
		s.data = append(s.data, '\n')
		s.hasData = true
	}
}

// Event returns the "event" field of the event Next returned last ("" when
// it had none). The slice is valid until the next call to Next.
func (s *SSEReader) Event() []byte { return s.event }

// readLine returns the next complete line without its terminator; the slice
// aliases the buffer and is valid until the next read.
func (s *SSEReader) readLine() ([]byte, error) {
	scanned := 0 // bytes at buf[r:] already known to hold no line terminator
	for {
		if !s.bomDone {
			pending := s.buf[s.r:s.w]
			if len(pending) >= len(utf8BOM) || s.srcErr != nil || !bytes.HasPrefix(utf8BOM, pending) {
				if bytes.HasPrefix(pending, utf8BOM) {
					s.r += len(utf8BOM)
				}
				s.bomDone = true
			}
		}
		if s.bomDone {
			if s.skipLF && s.r < s.w {
				if s.buf[s.r] == '\n' {
					s.r++
				}
				s.skipLF = false
			}
			if !s.skipLF {
				if i := indexEOL(s.buf[s.r+scanned : s.w]); i >= 0 {
					end := s.r + scanned + i
					line := s.buf[s.r:end]
					s.skipLF = s.buf[end] == '\r'
					s.r = end + 1
					if len(line) > s.maxLine {
						return nil, fmt.Errorf("reading event line: %w", ErrEventTooLarge)
					}
					return line, nil
				}
				scanned = s.w - s.r
				if scanned > s.maxLine {
					return nil, fmt.Errorf("reading event line: %w", ErrEventTooLarge)
				}
			}
		}
		if s.srcErr != nil {
			if s.srcErr == io.EOF {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("reading event stream: %w", s.srcErr)
		}
		s.fill()
	}
}

// fill reads once from the source into the free tail of the buffer,
// compacting or growing it first so that at least sseMinRead bytes are free.
func (s *SSEReader) fill() {
	if s.r == s.w {
		s.r, s.w = 0, 0
	}
	if len(s.buf)-s.w < sseMinRead {
		if s.r > 0 && len(s.buf)-(s.w-s.r) >= sseMinRead {
			copy(s.buf, s.buf[s.r:s.w])
		} else {
			nb := make([]byte, max(2*len(s.buf), sseInitialBuf))
			copy(nb, s.buf[s.r:s.w])
			s.buf = nb
		}
		s.w -= s.r
		s.r = 0
	}
	n, err := s.src.Read(s.buf[s.w:])
	if n < 0 || n > len(s.buf)-s.w {
		s.srcErr = errors.New("invalid read count from source")
		return
	}
	s.w += n
	switch {
	case err != nil:
		s.srcErr = err
	case n == 0:
		s.emptyRead++
		if s.emptyRead >= sseMaxEmptyReads {
			s.srcErr = io.ErrNoProgress
		}
	default:
		s.emptyRead = 0
	}
}

// indexEOL returns the index of the first CR or LF in b, or -1.
// Two byte searches beat one IndexAny: both are vectorized.
func indexEOL(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return bytes.IndexByte(b, '\r')
	}
	if j := bytes.IndexByte(b[:i], '\r'); j >= 0 {
		return j
	}
	return i
}
