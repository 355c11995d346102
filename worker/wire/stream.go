package wire

// The stream protocol, both halves: StreamSender is the worker's,
// StreamReceiver the gateway's. A stream is KindData messages numbered 1,
// 2, … (HdrSeq) to the request's inbox, each with the request's control
// subject as reply subject, then exactly one KindEnd or KindError numbered
// one past the last data message. The receiver acknowledges (HdrAck = the
// highest sequence number written to its client) on the control subject
// every half window, and the sender never has more than the window of
// unacknowledged data messages out. A cancel (HdrCancel) on the control
// subject, or the server's no-responders status there (the inbox is gone),
// stops the sender. The receiver probes the control subject of a stream
// that went quiet with its own inbox as reply subject: when nothing
// subscribes there any more, the server bounces the probe to the inbox.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Errors of a stream.
var (
	// ErrClientGone: the receiver cancelled, or its inbox disappeared.
	ErrClientGone = errors.New("client went away")
	// ErrStalled: the receiver acknowledged nothing for the ack timeout.
	ErrStalled = errors.New("client stopped reading")
	// ErrWorkerGone: the server bounced a message to the receiver's inbox
	// (no responders): the worker's control subject, or the request
	// subject, has no subscriber.
	ErrWorkerGone = errors.New("worker gone")
	// ErrChunksLost: a chunk came after a gap in the sequence. The bus
	// lost the ones between (the worker's server went and it reconnected
	// to another, which does not let it answer requests it took before),
	// so the stream cannot be finished; nothing is wrong with the chunk.
	ErrChunksLost = errors.New("stream chunks lost")
)

// StreamSender is the worker's half of one stream. Control may be called
// from another goroutine than the one sending; the sending methods from one
// goroutine only.
type StreamSender struct {
	publish    func(*nats.Msg) error
	inbox      string
	control    string
	worker     string
	evidenceID string
	window     int64

	seq      int // data messages sent
	acked    atomic.Int64
	credit   chan struct{}
	gone     chan struct{}
	goneOnce sync.Once
	onGone   func()
}

// NewStreamSender starts the sending half of a stream to inbox whose
// control subject is control; window is the request's (Request.Window).
// worker and evidenceID name the sender (evidenceID: the key whose inbox
// space control lies in, "" without admission). onGone (may be nil) is
// called once when the receiver goes away, from the goroutine that
// noticed: it should cancel the generation.
func NewStreamSender(publish func(*nats.Msg) error, inbox, control string, window int, worker, evidenceID string, onGone func()) *StreamSender {
	if window <= 0 {
		window = DefaultWindow
	}
	return &StreamSender{publish: publish, inbox: inbox, control: control, window: int64(window), worker: worker,
		evidenceID: evidenceID, credit: make(chan struct{}, 1), gone: make(chan struct{}), onGone: onGone}
}

// Control applies one message that arrived on the control subject: an ack
// raises the credit; a cancel, or the server's no-responders status (the
// inbox is gone), ends the stream. It never blocks.
func (s *StreamSender) Control(m *nats.Msg) {
	if IsStop(m) {
		s.goneOnce.Do(func() {
			close(s.gone)
			if s.onGone != nil {
				s.onGone()
			}
		})
		return
	}
	if a := int64(IntHeader(m.Header, HdrAck, -1)); a > s.acked.Load() {
		s.acked.Store(a)
		select {
		case s.credit <- struct{}{}:
		default:
		}
	}
}

// Gone reports whether the receiver went away.
func (s *StreamSender) Gone() bool {
	select {
	case <-s.gone:
		return true
	default:
		return false
	}
}

// Seq is the number of data messages sent.
func (s *StreamSender) Seq() int { return s.seq }

// WaitCredit returns once the window has room for another data message:
// ErrClientGone when the receiver went away, ErrStalled when it
// acknowledged nothing for timeout, or ctx's error.
func (s *StreamSender) WaitCredit(ctx context.Context, timeout time.Duration) error {
	for int64(s.seq)-s.acked.Load() >= s.window {
		timer := time.NewTimer(timeout)
		select {
		case <-s.credit:
			timer.Stop()
		case <-s.gone:
			timer.Stop()
			return ErrClientGone
		case <-ctx.Done():
			timer.Stop()
			if s.Gone() {
				return ErrClientGone
			}
			return fmt.Errorf("waiting for credit: %w", ctx.Err())
		case <-timer.C:
			return ErrStalled
		}
	}
	return nil
}

// Data sends one SSE event's data; event is its name ("" for none).
func (s *StreamSender) Data(event string, payload []byte) error {
	s.seq++
	m := s.msg(KindData, event, s.seq, payload)
	m.Reply = s.control
	if s.evidenceID != "" {
		m.Header.Set(HdrEvidenceID, s.evidenceID)
	}
	return s.send(m)
}

// End ends the stream; final is the receipt chunk (nil for none) and event
// its name.
func (s *StreamSender) End(event string, final []byte) error {
	m := s.msg(KindEnd, event, s.seq+1, final)
	m.Header.Set(HdrStatus, "200")
	return s.send(m)
}

// Fail ends the stream with an error: body is an OpenAI error body (or, in
// a Responses stream that started, its "error" event's data with event
// "error").
func (s *StreamSender) Fail(status int, code, event string, body []byte) error {
	m := s.msg(KindError, event, s.seq+1, body)
	m.Header.Set(HdrStatus, strconv.Itoa(status))
	if code != "" {
		m.Header.Set(HdrError, code)
	}
	return s.send(m)
}

func (s *StreamSender) msg(kind, event string, seq int, data []byte) *nats.Msg {
	m := nats.NewMsg(s.inbox)
	m.Header.Set(HdrKind, kind)
	m.Header.Set(HdrWorker, s.worker)
	if event != "" {
		m.Header.Set(HdrEvent, event)
	}
	m.Header.Set(HdrSeq, strconv.Itoa(seq))
	m.Data = data
	return m
}

func (s *StreamSender) send(m *nats.Msg) error {
	if err := s.publish(m); err != nil {
		return fmt.Errorf("publishing chunk: %w", err)
	}
	return nil
}

// IsStop reports whether a message on a control subject stops the
// request: a cancel, or the server's no-responders status (the requester's
// inbox is gone).
func IsStop(m *nats.Msg) bool {
	return IsNoResponders(m) || m.Header.Get(HdrCancel) != ""
}

// Chunk is one decoded stream message.
type Chunk struct {
	Kind   string // KindData, KindEnd or KindError
	Seq    int
	Event  string // SSE event name ("" for none)
	Status int    // of KindEnd and KindError (0 when absent or malformed)
	Code   string // of KindError
	Worker string
	Data   []byte
}

// StreamReceiver is the gateway's half of one stream. Its methods are
// called from one goroutine.
type StreamReceiver struct {
	publish func(*nats.Msg) error
	inbox   string
	window  int
	events  bool
	control string
	next    int // next expected seq
	acked   int // last seq acknowledged
}

// NewStreamReceiver starts the receiving half of a stream whose messages
// arrive on inbox. events marks a Responses stream: every data message
// names its SSE event (ValidEventName).
func NewStreamReceiver(publish func(*nats.Msg) error, inbox string, window int, events bool) *StreamReceiver {
	if window <= 0 {
		window = DefaultWindow
	}
	return &StreamReceiver{publish: publish, inbox: inbox, window: window, events: events, next: 1}
}

// SetControl sets the control subject, from the accept or the first data
// message, once the caller checked whose it is (AckSubjectOK).
func (r *StreamReceiver) SetControl(subject string) { r.control = subject }

// Control is the control subject ("" while unknown).
func (r *StreamReceiver) Control() string { return r.control }

// Next is the sequence number the next message must carry.
func (r *StreamReceiver) Next() int { return r.next }

// Decode checks and decodes the next stream message: ErrWorkerGone for
// the server's no-responders status, ErrBadReply for a message out of
// order, of an unknown kind, with an event name that could break the SSE
// framing, or a data message whose reply subject is not the control
// subject.
func (r *StreamReceiver) Decode(m *nats.Msg) (Chunk, error) {
	if IsNoResponders(m) {
		return Chunk{}, ErrWorkerGone
	}
	seq, err := strconv.Atoi(m.Header.Get(HdrSeq))
	if err == nil && seq > r.next {
		return Chunk{}, fmt.Errorf("%w: want %d, got %d", ErrChunksLost, r.next, seq)
	}
	if err != nil || seq != r.next {
		return Chunk{}, fmt.Errorf("%w: stream out of order: want %d", ErrBadReply, r.next)
	}
	c := Chunk{Kind: m.Header.Get(HdrKind), Seq: seq, Event: m.Header.Get(HdrEvent), Code: m.Header.Get(HdrError),
		Worker: m.Header.Get(HdrWorker), Data: m.Data}
	switch c.Kind {
	case KindData, KindEnd, KindError:
	default:
		return Chunk{}, fmt.Errorf("%w: stream message of kind %q", ErrBadReply, truncate(c.Kind, 16))
	}
	if !r.events {
		c.Event = ""
	} else if !ValidEventName(c.Event) && (c.Event != "" || c.Kind == KindData) {
		// A Responses stream names every event; a name that could break
		// the framing is the worker's fault, not the client's.
		return Chunk{}, fmt.Errorf("%w: stream event without a valid name", ErrBadReply)
	}
	if c.Kind == KindData && m.Reply != r.control {
		// Acks go only where the accept or first chunk asked, which was
		// checked.
		return Chunk{}, fmt.Errorf("%w: stream chunk changed its control subject", ErrBadReply)
	}
	if c.Kind != KindData {
		c.Status, _ = strconv.Atoi(m.Header.Get(HdrStatus))
	}
	r.next++
	return c, nil
}

// Written acknowledges seq once it was written to the client: one ack
// every half window.
func (r *StreamReceiver) Written(seq int) {
	if r.control == "" || seq-r.acked < max(1, r.window/2) {
		return
	}
	ack := nats.NewMsg(r.control)
	ack.Header.Set(HdrAck, strconv.Itoa(seq))
	_ = r.publish(ack)
	r.acked = seq
}

// Cancel tells the sender to stop. Without a control subject there is
// nobody to tell: unsubscribing the inbox stops the sender at its next
// message.
func (r *StreamReceiver) Cancel() {
	if r.control == "" {
		return
	}
	m := nats.NewMsg(r.control)
	m.Header.Set(HdrCancel, "1")
	_ = r.publish(m)
}

// Probe checks that the sender is still there: it repeats the last ack
// (which the sender ignores) on the control subject with the inbox as
// reply subject. When nothing subscribes there any more, the server
// bounces it to the inbox and Decode returns ErrWorkerGone.
func (r *StreamReceiver) Probe() {
	if r.control == "" {
		return
	}
	m := nats.NewMsg(r.control)
	m.Reply = r.inbox
	m.Header.Set(HdrAck, strconv.Itoa(r.acked))
	_ = r.publish(m)
}
