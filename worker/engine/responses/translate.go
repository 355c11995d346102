package responses

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/teegate/teegate/worker/engine"
)

// ResponseID is the id of the response to a request: "resp_" and the
// request id, so a client can match an answer to its receipt.
func ResponseID(requestID string) string { return "resp_" + requestID }

type chatUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

func (u *chatUsage) usage() Usage {
	if u == nil {
		return Usage{}
	}
	return Usage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
}

type chatToolCallDelta struct {
	Index    *int   `json:"index"`
	ID       string `json:"id"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type chatCompletion struct {
	Model   string `json:"model"`
	Created int64  `json:"created"`
	Choices []struct {
		Message struct {
			Content   *string             `json:"content"`
			ToolCalls []chatToolCallDelta `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *chatUsage `json:"usage"`
}

var errBadChat = engine.Errorf(http.StatusBadGateway, "server_error", "", "bad_response",
	"inference engine sent a chat completion that could not be read")

// FromChat turns a chat completion body into the Responses object for
// req: the first choice's text as an output_text message, its tool calls
// as function_call items, its usage and finish reason. created is the
// response's created_at (Unix seconds); the completion's own is used when
// it has one.
func FromChat(req *Request, id string, created int64, chat []byte) ([]byte, error) {
	var c chatCompletion
	if err := json.Unmarshal(chat, &c); err != nil {
		return nil, errBadChat
	}
	if c.Created > 0 {
		created = c.Created
	}
	em := NewEmitter(req, id, created, c.Model)
	finish := ""
	if len(c.Choices) > 0 {
		ch := c.Choices[0]
		if ch.Message.Content != nil {
			em.Text(*ch.Message.Content)
		}
		for i, tc := range ch.Message.ToolCalls {
			em.ToolCall(i, tc.ID, tc.Function.Name, tc.Function.Arguments)
		}
		finish = ch.FinishReason
	}
	em.Finish(finish, c.Usage.usage(), created)
	return em.Response(), nil
}

type chatChunk struct {
	Model   string `json:"model"`
	Created int64  `json:"created"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Content   *string             `json:"content"`
			ToolCalls []chatToolCallDelta `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *chatUsage      `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// ChatStream is a Responses event stream translated from a chat
// completions stream. It implements engine.EventStream.
type ChatStream struct {
	src     engine.Stream
	em      *Emitter
	now     func() int64
	pending []Event
	next    int
	cur     string
	finish  string
	usage   Usage
	model   bool
	done    bool
}

var _ engine.EventStream = (*ChatStream)(nil)

// NewChatStream translates src, the chat stream answering req.ChatBody().
// now gives completed_at. response.created and response.in_progress are
// ready before src is first read.
func NewChatStream(req *Request, id string, created int64, now func() int64, src engine.Stream) *ChatStream {
	s := &ChatStream{src: src, em: NewEmitter(req, id, created, ""), now: now}
	s.em.Start()
	s.pending = s.em.Drain()
	return s
}

// Next returns the next event's payload; Event names it.
func (s *ChatStream) Next(ctx context.Context) ([]byte, error) {
	for s.next >= len(s.pending) {
		if s.done {
			return nil, io.EOF
		}
		p, err := s.src.Next(ctx)
		if errors.Is(err, io.EOF) {
			s.em.Finish(s.finish, s.usage, s.now())
			s.done = true
		} else if err != nil {
			return nil, err
		} else if err := s.add(p); err != nil {
			return nil, err
		}
		s.pending, s.next = s.em.Drain(), 0
	}
	ev := s.pending[s.next]
	s.next++
	s.cur = ev.Name
	return ev.Data, nil
}

func (s *ChatStream) add(p []byte) error {
	var c chatChunk
	if err := json.Unmarshal(p, &c); err != nil {
		return errBadChat
	}
	if present(c.Error) {
		var body struct {
			Error *engine.Error `json:"error"`
		}
		if json.Unmarshal(p, &body) == nil && body.Error != nil && body.Error.Message != "" {
			body.Error.Status = http.StatusBadGateway
			if body.Error.Type == "" {
				body.Error.Type = "server_error"
			}
			return body.Error
		}
		return errBadChat
	}
	if !s.model && c.Model != "" {
		s.em.SetModel(c.Model)
		s.model = true
	}
	for _, ch := range c.Choices {
		if ch.Index != 0 {
			continue
		}
		if ch.Delta.Content != nil {
			s.em.Text(*ch.Delta.Content)
		}
		for i, tc := range ch.Delta.ToolCalls {
			idx := i
			if tc.Index != nil {
				idx = *tc.Index
			}
			s.em.ToolCall(idx, tc.ID, tc.Function.Name, tc.Function.Arguments)
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			s.finish = *ch.FinishReason
		}
	}
	if c.Usage != nil {
		s.usage = c.Usage.usage()
	}
	return nil
}

// Event is the name of the event Next returned last.
func (s *ChatStream) Event() string { return s.cur }

// Close closes the chat stream.
func (s *ChatStream) Close() error { return s.src.Close() }
