package builtin

import (
	"context"
	"io"
	"sync"

	"github.com/teegate/teegate/worker/engine"
)

const (
	stStart = iota
	stGenerate
	stUsage
	stDone
)

// stream generates lazily: each decoding step (all live choices advance one
// token, after the latency profile's wait) happens inside Next, so a reader
// that stops reading stops generation, and nothing runs in the background.
type stream struct {
	e     *Engine
	p     *plan
	sc    *scratch
	head  []byte
	state int

	buf   []byte
	spans [][2]int // payloads of the current step, as offsets into buf
	next  int

	err       error
	closed    chan struct{}
	closeOnce sync.Once
}

var _ engine.Stream = (*stream)(nil)

func newStream(e *Engine, p *plan) *stream {
	return &stream{e: e, p: p, sc: newScratch(e.m), head: e.chunkHead(p), closed: make(chan struct{})}
}

// Next returns the next SSE payload, generating the next step when the
// previous one is used up. The slice is reused by the following call.
func (s *stream) Next(ctx context.Context) ([]byte, error) {
	select {
	case <-s.closed:
		return nil, ErrStreamClosed
	default:
	}
	if s.err != nil {
		return nil, s.err
	}
	if err := ctx.Err(); err != nil {
		s.err = err
		return nil, err
	}
	for s.next >= len(s.spans) {
		if s.state == stDone {
			return nil, io.EOF
		}
		s.buf, s.spans, s.next = s.buf[:0], s.spans[:0], 0
		if err := s.advance(ctx); err != nil {
			s.err = err
			return nil, err
		}
	}
	sp := s.spans[s.next]
	s.next++
	return s.buf[sp[0]:sp[1]], nil
}

func (s *stream) add(kind, i int, text []byte, finish string) {
	start := len(s.buf)
	s.buf = appendChunk(s.buf, s.head, s.p, kind, i, text, finish)
	s.spans = append(s.spans, [2]int{start, len(s.buf)})
}

func (s *stream) advance(ctx context.Context) error {
	p := s.p
	switch s.state {
	case stStart:
		for i := range p.samplers {
			switch {
			case p.chat:
				s.add(chunkRole, i, nil, "")
			case p.echo != nil && p.echo[i] != "":
				s.add(chunkText, i, []byte(p.echo[i]), "")
			}
		}
		s.state = stGenerate
	case stGenerate:
		d := s.e.cfg.Latency.PerToken
		if p.steps == 0 {
			d = s.e.cfg.Latency.TTFT
		}
		if err := s.e.sleep(ctx, d, s.closed); err != nil {
			return err
		}
		for i := range p.samplers {
			if p.finish[i] != "" {
				continue
			}
			delta, fin := p.stepChoice(i, s.sc)
			if len(delta) > 0 {
				s.add(chunkText, i, delta, "")
			}
			if fin != "" {
				s.add(chunkFinish, i, nil, fin)
			}
		}
		p.steps++
		if p.active == 0 {
			s.state = stUsage
		}
	case stUsage:
		if p.includeUsage {
			start := len(s.buf)
			s.buf = appendUsageChunk(s.buf, s.head, p)
			s.spans = append(s.spans, [2]int{start, len(s.buf)})
		}
		s.state = stDone
	}
	return nil
}

// Close stops generation; a Next blocked in a latency wait returns
// ErrStreamClosed. Close is idempotent and safe from any goroutine.
func (s *stream) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return nil
}
