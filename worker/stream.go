package worker

// The worker half of the stream protocol: chunks with sequence numbers to
// the requester's inbox, credit from its acks, cancel.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/responses"
	"github.com/teegate/teegate/worker/wire"
)

// stream relays payloads to the requester's inbox with flow control.
func (w *Worker) stream(ctx context.Context, cancel context.CancelFunc, sv *serving, req micro.Request, h nats.Header, meta Meta, s engine.Stream) (int, error) {
	defer s.Close()
	inbox := req.Reply()
	nc, epoch := sv.nc, sv.epoch
	window := wire.IntHeader(h, wire.HdrWindow, wire.DefaultWindow)
	if window == 0 {
		window = wire.DefaultWindow
	}
	// The ack subject lies in this connection's own inbox space (the
	// gateway publishes nowhere else) and is random: nobody else can
	// guess it to cancel this stream.
	ackSubj := nc.NewInbox() + "." + randomToken()
	acks := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(ackSubj, acks)
	if err != nil {
		return 0, fmt.Errorf("subscribing for acks: %w", err)
	}
	defer sub.Unsubscribe()

	var notary StreamNotary
	if n := w.getNotary(); n != nil {
		notary = n.Stream(ctx, meta, req.Data())
	}
	// The control loop applies acks and cancels while the main loop may be
	// blocked in the engine: a cancel must interrupt generation itself.
	var acked atomic.Int64
	credit := make(chan struct{}, 1)
	gone := make(chan struct{})
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-acks:
				if wire.IsNoResponders(m) || m.Header.Get(wire.HdrCancel) != "" {
					close(gone)
					cancel()
					return
				}
				if a := int64(wire.IntHeader(m.Header, wire.HdrAck, -1)); a > acked.Load() {
					acked.Store(a)
					select {
					case credit <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	wentAway := func() bool {
		select {
		case <-gone:
			return true
		default:
			return false
		}
	}
	seq := 0
	responsesAPI := meta.Op == wire.OpResponses
	send := func(kind string, data []byte, status int, event string) error {
		msg := nats.NewMsg(inbox)
		msg.Header.Set(wire.HdrKind, kind)
		msg.Header.Set(wire.HdrWorker, w.cfg.ID)
		if event != "" {
			msg.Header.Set(wire.HdrEvent, event)
		}
		if kind == wire.KindData {
			seq++
			msg.Header.Set(wire.HdrSeq, strconv.Itoa(seq))
			msg.Reply = ackSubj
			if epoch != "" {
				// Names the key whose inbox space ackSubj lies in.
				msg.Header.Set(wire.HdrEvidenceID, epoch)
			}
		} else {
			msg.Header.Set(wire.HdrSeq, strconv.Itoa(seq+1))
			msg.Header.Set(wire.HdrStatus, strconv.Itoa(status))
		}
		msg.Data = data
		if err := nc.PublishMsg(msg); err != nil {
			return fmt.Errorf("publishing chunk: %w", err)
		}
		return nil
	}
	for {
		// Wait for credit when the window is full.
		for int64(seq)-acked.Load() >= int64(window) {
			timer := time.NewTimer(w.cfg.AckTimeout)
			select {
			case <-credit:
				timer.Stop()
			case <-ctx.Done():
				timer.Stop()
				if wentAway() {
					return seq, errors.New("client went away")
				}
				return seq, fmt.Errorf("waiting for credit: %w", ctx.Err())
			case <-timer.C:
				cancel()
				return seq, errors.New("waiting for credit: client stopped reading")
			}
		}
		// failed sends an error: before any chunk as an HTTP error body; in
		// a Responses stream that started, as its "error" event.
		failed := func(e *engine.Error) {
			if responsesAPI && seq > 0 {
				_ = send(wire.KindError, responses.ErrorEvent(int64(seq), e), e.Status, "error")
				return
			}
			_ = send(wire.KindError, e.Body(), e.Status, "")
		}
		payload, err := s.Next(ctx)
		if errors.Is(err, io.EOF) {
			var final []byte
			if notary != nil {
				signStart := time.Now()
				final, err = notary.Finish(ctx)
				w.metrics.signed("stream", signStart)
				if err != nil {
					failed(engine.Errorf(http.StatusInternalServerError, "server_error", "", "receipt_failed", "The worker could not issue a receipt."))
					return seq, fmt.Errorf("finishing receipt: %w", err)
				}
			}
			event := ""
			if responsesAPI && final != nil {
				event = attest.ResponsesReceiptEvent
			}
			return seq, send(wire.KindEnd, final, http.StatusOK, event)
		}
		if err != nil {
			e, ok := engine.AsError(err)
			if !ok {
				if wentAway() {
					return seq, errors.New("client went away")
				}
				if ctx.Err() != nil {
					return seq, fmt.Errorf("generating: %w", ctx.Err())
				}
				e = engine.Errorf(http.StatusInternalServerError, "server_error", "", "", "The engine failed while streaming.")
			}
			failed(e)
			return seq, fmt.Errorf("generating: %w", err)
		}
		event := ""
		if responsesAPI {
			event = engine.EventOf(s)
		}
		if responsesAPI && !wire.ValidEventName(event) {
			failed(engine.Errorf(http.StatusBadGateway, "server_error", "", "bad_response", "The engine sent a stream event without a valid name."))
			return seq, errors.New("generating: engine event without a valid name")
		}
		if meta.UsageHidden && isUsageChunk(payload) {
			// The usage chunk the client did not ask for: its usage goes
			// into the receipt, the chunk nowhere.
			if notary != nil {
				notary.Usage(payload)
			}
			continue
		}
		if notary != nil {
			notary.Add(event, payload)
		}
		if err := send(wire.KindData, payload, 0, event); err != nil {
			return seq, err
		}
	}
}

// randomToken is 128 random bits as one subject token.
func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// asksUsage reports whether a stream request's body sets
// stream_options.include_usage to true.
func asksUsage(body []byte) bool {
	var r struct {
		StreamOptions *struct {
			IncludeUsage *bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if json.Unmarshal(body, &r) != nil || r.StreamOptions == nil || r.StreamOptions.IncludeUsage == nil {
		return false
	}
	return *r.StreamOptions.IncludeUsage
}

// isUsageChunk reports whether a stream payload is the usage chunk of
// stream_options.include_usage: "choices" an empty array and "usage" an
// object.
func isUsageChunk(p []byte) bool {
	if !mayHaveUsage(p) {
		return false
	}
	var c struct {
		Choices *[]json.RawMessage `json:"choices"`
		Usage   *json.RawMessage   `json:"usage"`
	}
	if json.Unmarshal(p, &c) != nil || c.Choices == nil || len(*c.Choices) != 0 || c.Usage == nil {
		return false
	}
	return len(*c.Usage) > 0 && (*c.Usage)[0] == '{'
}
