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
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/responses"
	"github.com/teegate/teegate/worker/wire"
)

// stream relays payloads to the requester's inbox with flow control: a
// wire.StreamSender on the job's control subject.
func (w *Worker) stream(ctx context.Context, cancel context.CancelFunc, sv *serving, req micro.Request, j *job, r wire.Request, meta Meta, s engine.Stream) (int, error) {
	closed := false
	closeStream := func() {
		if !closed {
			closed = true
			_ = s.Close()
		}
	}
	defer closeStream()
	out := wire.NewStreamSender(sv.nc.PublishMsg, req.Reply(), j.control, r.Window, w.cfg.ID, sv.epoch, cancel)
	j.sender.Store(out)

	var notary StreamNotary
	if n := w.getNotary(); n != nil {
		notary = n.Stream(ctx, meta, r.Body)
	}
	responsesAPI := meta.Op == wire.OpResponses
	// failed sends an error: before any chunk as an HTTP error body; in a
	// Responses stream that started, as its "error" event.
	failed := func(e *engine.Error, code string) {
		if responsesAPI && out.Seq() > 0 {
			_ = out.Fail(e.Status, code, "error", responses.ErrorEvent(int64(out.Seq()), e))
			return
		}
		_ = out.Fail(e.Status, code, "", e.Body())
	}
	for {
		// Wait for credit when the window is full.
		if err := out.WaitCredit(ctx, w.cfg.AckTimeout); err != nil {
			if errors.Is(err, wire.ErrStalled) {
				cancel()
				return out.Seq(), fmt.Errorf("waiting for credit: %w", err)
			}
			return out.Seq(), err
		}
		payload, err := s.Next(ctx)
		if errors.Is(err, io.EOF) {
			var final []byte
			if notary != nil {
				signStart := time.Now()
				final, err = notary.Finish(ctx)
				w.metrics.signed("stream", signStart)
				if err != nil {
					e := sealFailure(err)
					failed(engine.Errorf(e.Status, e.Type, "", e.Code, "%s", e.Message), e.Wire)
					return out.Seq(), fmt.Errorf("finishing receipt: %w", err)
				}
			}
			event := ""
			if responsesAPI && final != nil {
				event = attest.ResponsesReceiptEvent
			}
			// The engine is done with the request and the receipt is
			// signed: the slot is free before the gateway hears the end.
			closeStream()
			j.free()
			return out.Seq(), out.End(event, final)
		}
		if err != nil {
			e, ok := engine.AsError(err)
			code := wire.CodeEngine
			if !ok {
				if out.Gone() {
					return out.Seq(), wire.ErrClientGone
				}
				if ctx.Err() != nil {
					return out.Seq(), fmt.Errorf("generating: %w", ctx.Err())
				}
				e, code = engine.Errorf(http.StatusInternalServerError, "server_error", "", "", "The engine failed while streaming."), wire.CodeInternal
			}
			failed(e, code)
			return out.Seq(), fmt.Errorf("generating: %w", err)
		}
		event := ""
		if responsesAPI {
			event = engine.EventOf(s)
		}
		if responsesAPI && !wire.ValidEventName(event) {
			failed(engine.Errorf(http.StatusBadGateway, "server_error", "", "bad_response", "The engine sent a stream event without a valid name."), wire.CodeEngine)
			return out.Seq(), errors.New("generating: engine event without a valid name")
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
		if err := out.Data(event, payload); err != nil {
			return out.Seq(), err
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
