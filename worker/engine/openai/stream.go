package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/teegate/teegate/worker/engine"
)

// errNextDone is the cause set when the context given to Next ends while
// Next waits for the engine.
var errNextDone = errors.New("stream reader gone")

// stream is the engine.Stream of one upstream SSE response. Next is not safe
// for concurrent use; Close may be called from any goroutine at any time,
// which is how a client disconnect reaches the engine.
type stream struct {
	parent context.Context // the ctx given to Do
	reqCtx context.Context // the upstream request's ctx; canceling it aborts generation
	cancel context.CancelCauseFunc
	body   io.ReadCloser
	sse    *SSEReader
	idle   time.Duration
	// idleTimer runs only while Next waits, so a slow consumer is not
	// mistaken for a stalled engine.
	idleTimer *time.Timer
	err       error // terminal result, io.EOF included; owned by Next
	closed    atomic.Bool
	once      sync.Once
	// events: a Responses API stream, whose events are named and which
	// ends with the body after a terminal event (no [DONE]).
	events   bool
	event    string
	terminal bool
}

var _ engine.EventStream = (*stream)(nil)

// Event is the SSE event name of the payload Next returned last (Responses
// streams; "" otherwise).
func (s *stream) Event() string { return s.event }

func newStream(parent, reqCtx context.Context, cancel context.CancelCauseFunc, body io.ReadCloser, cfg Config) *stream {
	s := &stream{
		parent: parent,
		reqCtx: reqCtx,
		cancel: cancel,
		body:   body,
		sse:    NewSSEReader(body, cfg.MaxEventBytes),
		idle:   cfg.StreamIdleTimeout,
	}
	s.idleTimer = time.AfterFunc(time.Hour, func() { cancel(errIdle) })
	s.idleTimer.Stop()
	return s
}

// Next returns the next data payload unchanged, io.EOF after "data: [DONE]",
// or a terminal error: ErrStreamTruncated (ended or broke before [DONE]),
// ErrStreamIdle (no event within StreamIdleTimeout), ErrBadResponse (an event
// over the size limit), each chained with a client-facing *engine.Error; the
// context's error when ctx or the Do context ends (the upstream request is
// then aborted); ErrStreamClosed after Close. Terminal results repeat.
func (s *stream) Next(ctx context.Context) ([]byte, error) {
	if s.err != nil {
		return nil, s.err
	}
	if s.closed.Load() {
		return nil, ErrStreamClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, s.finish(fmt.Errorf("reading engine stream: %w", err))
	}
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { s.cancel(errNextDone) })
	}
	s.idleTimer.Reset(s.idle)
	p, err := s.sse.Next()
	s.idleTimer.Stop()
	if stop != nil {
		stop()
	}
	if err == nil {
		if string(p) == "[DONE]" {
			s.drain()
			return nil, s.finish(io.EOF)
		}
		if s.events {
			s.event = eventName(s.sse.Event(), p)
			switch s.event {
			case "response.completed", "response.incomplete", "response.failed":
				s.terminal = true
			}
		}
		return p, nil
	}
	if s.events && s.terminal && err == io.EOF {
		return nil, s.finish(io.EOF) // a Responses stream ends with its body
	}
	return nil, s.finish(s.classify(ctx, err))
}

// Close aborts the upstream request if it is still running. It is
// idempotent and safe to call concurrently with Next.
func (s *stream) Close() error {
	s.closed.Store(true)
	s.cancel(ErrStreamClosed)
	s.release()
	return nil
}

// drainGrace and drainMax bound the read for the end of the body after
// [DONE]. Servers end it at once; a server that does not is cut off.
const (
	drainGrace = 50 * time.Millisecond
	drainMax   = 4 << 10
)

// drain reads the rest of the body after [DONE]. Seeing the body's end lets
// net/http keep the connection for reuse; closing it early instead leaves a
// loopback connection in TIME_WAIT per stream, which runs out of ports at
// high stream rates.
func (s *stream) drain() {
	t := time.AfterFunc(drainGrace, func() { s.cancel(errReleased) })
	io.CopyN(io.Discard, s.body, drainMax)
	t.Stop()
}

// eventName is an event's SSE name, or for a server that sends none, its
// JSON "type" (OpenAI always sends both, equal).
func eventName(field, payload []byte) string {
	if len(field) > 0 {
		return string(field)
	}
	var v struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(payload, &v) != nil {
		return ""
	}
	return v.Type
}

func (s *stream) finish(err error) error {
	s.err = err
	s.release()
	return err
}

func (s *stream) release() {
	s.once.Do(func() {
		s.idleTimer.Stop()
		s.cancel(errReleased)
		s.body.Close()
	})
}

const streamWhat = "reading engine stream"

func (s *stream) classify(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", streamWhat, ctx.Err())
	}
	if s.parent.Err() != nil {
		return fmt.Errorf("%s: %w", streamWhat, s.parent.Err())
	}
	switch context.Cause(s.reqCtx) {
	case errIdle:
		return clientError(streamWhat, timedOut(), ErrStreamIdle, nil)
	case ErrStreamClosed:
		return fmt.Errorf("%s: %w", streamWhat, ErrStreamClosed)
	}
	if errors.Is(err, ErrEventTooLarge) {
		return clientError(streamWhat, badResponse("inference engine sent an oversized stream event"), ErrBadResponse, err)
	}
	truncated := engine.Errorf(http.StatusBadGateway, typeServer, "", CodeStreamTruncated, "inference engine ended the stream early")
	if err == io.EOF {
		return clientError(streamWhat, truncated, ErrStreamTruncated, nil)
	}
	return clientError(streamWhat, truncated, ErrStreamTruncated, err)
}
