package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Op names the OpenAI operation a call performs.
type Op string

const (
	OpChatCompletions Op = "chat.completions"
	OpCompletions     Op = "completions"
	OpEmbeddings      Op = "embeddings"
	// OpResponses is the OpenAI Responses API (POST /v1/responses). Its
	// streams are named events (Event): every payload's SSE "event:" field
	// is its JSON "type".
	OpResponses Op = "responses"
)

// Path is the HTTP path of the operation under an OpenAI-compatible base URL.
func (o Op) Path() string {
	switch o {
	case OpChatCompletions:
		return "/v1/chat/completions"
	case OpCompletions:
		return "/v1/completions"
	case OpEmbeddings:
		return "/v1/embeddings"
	case OpResponses:
		return "/v1/responses"
	}
	return ""
}

// Valid reports whether o is a known operation.
func (o Op) Valid() bool { return o.Path() != "" }

// Model describes one model an engine serves, in the shape of an OpenAI
// model object.
type Model struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // always "model"
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// Call is one OpenAI-compatible request as the client sent it.
type Call struct {
	Op Op
	// Body is the exact request body bytes. Engines must not modify it.
	Body []byte
	// Stream is true when the body asks for "stream": true. The worker
	// decided it from the body; engines may rely on it.
	Stream bool
	// RequestID identifies the request in logs and ids; engines may use it
	// to build response ids.
	RequestID string
	// IncludeUsage asks a chat or completions stream to end with the usage
	// chunk (choices [] and usage) although the body does not ask for one:
	// the worker needs the real usage for the receipt and removes that
	// chunk before the client sees it. Engines behave as if the body said
	// stream_options.include_usage = true.
	IncludeUsage bool
}

// Result is what an engine returns for a successful call. Exactly one of
// Body and Stream is set: Body for non-stream calls, Stream for streamed ones.
type Result struct {
	// Body is the complete JSON response body (non-stream).
	Body []byte
	// Stream yields the SSE data payloads in order (stream).
	Stream Stream
}

// Stream yields the payloads of a server-sent-event stream: the bytes after
// "data: " of each event, without the trailing blank line. The terminating
// "[DONE]" event is not a payload: Next returns io.EOF instead.
type Stream interface {
	// Next returns the next payload. It returns io.EOF after the last one.
	// The returned slice is valid until the next call to Next.
	Next(ctx context.Context) ([]byte, error)
	// Close releases the stream; it cancels generation if it is still going.
	Close() error
}

// EventStream is a Stream whose events carry an SSE event name (the
// "event:" field), as Responses API streams do. The worker sends the name
// with each payload and the gateway writes it before the payload's data
// lines; streams of other operations have no names.
type EventStream interface {
	Stream
	// Event is the event name of the payload Next returned last.
	Event() string
}

// EventOf returns the event name of the payload s returned last: "" unless
// s is an EventStream.
func EventOf(s Stream) string {
	if es, ok := s.(EventStream); ok {
		return es.Event()
	}
	return ""
}

// Engine serves OpenAI-compatible calls. Implementations are safe for
// concurrent use.
type Engine interface {
	// Models lists the models the engine serves.
	Models(ctx context.Context) ([]Model, error)
	// Do performs one call. Failures that the client should see are
	// returned as *Error; other errors are internal (reported as 500).
	Do(ctx context.Context, call Call) (*Result, error)
}

// Refresher is an engine whose model list may change while it runs (a
// server that loads and unloads models). The worker calls RefreshModels
// periodically: the answer is read from the engine now, not from a cache,
// and an error means the engine cannot serve at the moment. Engines with a
// fixed list do not implement it.
type Refresher interface {
	RefreshModels(ctx context.Context) ([]Model, error)
}

// Error is an OpenAI-shaped error with the HTTP status the client gets.
type Error struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// Error names the status and type only: Message is for the client who sent
// the request and may quote it, so it must never reach a log line.
func (e *Error) Error() string {
	if e.Code != nil {
		return fmt.Sprintf("engine error %d (%s, %s)", e.Status, e.Type, *e.Code)
	}
	return fmt.Sprintf("engine error %d (%s)", e.Status, e.Type)
}

// Body returns the OpenAI error body {"error":{...}}.
func (e *Error) Body() []byte {
	b, err := json.Marshal(struct {
		Error *Error `json:"error"`
	}{e})
	if err != nil { // cannot happen: only strings
		return []byte(`{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}`)
	}
	return b
}

// Errorf builds an *Error. param and code may be empty for null.
func Errorf(status int, typ, param, code, format string, args ...any) *Error {
	e := &Error{Status: status, Type: typ, Message: fmt.Sprintf(format, args...)}
	if param != "" {
		e.Param = &param
	}
	if code != "" {
		e.Code = &code
	}
	return e
}

// InvalidRequest is the common 400 invalid_request_error.
func InvalidRequest(param, format string, args ...any) *Error {
	return Errorf(400, "invalid_request_error", param, "", format, args...)
}

// AsError returns err as *Error when it is (or wraps) one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// SliceStream is a Stream over fixed payloads; useful for engines that
// produce a whole answer at once and for tests.
type SliceStream struct {
	Payloads [][]byte
	i        int
}

func (s *SliceStream) Next(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.i >= len(s.Payloads) {
		return nil, io.EOF
	}
	p := s.Payloads[s.i]
	s.i++
	return p, nil
}

func (s *SliceStream) Close() error { return nil }
