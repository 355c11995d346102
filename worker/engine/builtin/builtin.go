package builtin

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/tiktoken-go/tokenizer"

	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/responses"
)

//go:embed corpus.txt
var corpusText string

// DefaultModelID is the model id served when Config.ModelID is empty.
const DefaultModelID = "teegate-builtin"

// Limits of the engine. They are part of the contract: requests beyond them
// are refused with a 400 rather than silently clamped.
const (
	// DefaultEmbeddingDims is the embedding size when Config.EmbeddingDims is 0.
	DefaultEmbeddingDims = 256
	// MaxEmbeddingDims bounds Config.EmbeddingDims.
	MaxEmbeddingDims = 4096
	// DefaultChatMaxTokens is the completion budget of a chat request that
	// sets neither max_tokens nor max_completion_tokens.
	DefaultChatMaxTokens = 64
	// DefaultCompletionMaxTokens is the budget of a legacy completion without
	// max_tokens (OpenAI's documented default for /v1/completions).
	DefaultCompletionMaxTokens = 16
	// MaxCompletionTokens caps max_tokens and max_completion_tokens.
	MaxCompletionTokens = 4096
	// ContextWindow bounds prompt tokens plus the completion budget of one choice.
	ContextWindow = 32768
	// MaxChoices bounds n (and, for completions, n times the number of prompts).
	MaxChoices = 16
	// MaxEmbeddingInputs bounds the number of inputs of one embeddings call.
	MaxEmbeddingInputs = 2048
	// MaxEmbeddingInputTokens bounds the tokens of one embeddings input.
	MaxEmbeddingInputTokens = 8192
)

// modelVersion names the generator and corpus revision; it feeds
// system_fingerprint so a client can tell when the builtin model changed.
const modelVersion = "teegate-builtin/ngram-v1"

// DefaultCreatedUnix (2026-01-01T00:00:00Z) is the model object's creation
// time when Config.Created is zero: a fixed date keeps /v1/models
// byte-stable across restarts.
const DefaultCreatedUnix = 1767225600

// ErrInvalidConfig reports a Config that New refuses.
var ErrInvalidConfig = errors.New("invalid builtin engine config")

// ErrStreamClosed is returned by Stream.Next after Close.
var ErrStreamClosed = errors.New("builtin stream closed")

// Latency imitates GPU decoding. Zero values mean no delay.
type Latency struct {
	// TTFT is the delay before the first generated token.
	TTFT time.Duration
	// PerToken is the delay before each later decoding step; all choices of
	// a request advance together in one step, as in a batched decoder.
	PerToken time.Duration
}

// Config configures an Engine. The zero value is valid.
type Config struct {
	// ModelID is the only model the engine serves; DefaultModelID if empty.
	ModelID string
	// Created is the model object's creation time; a fixed date if zero.
	Created time.Time
	// Latency is the optional decoding latency profile.
	Latency Latency
	// EmbeddingDims is the default embedding size (DefaultEmbeddingDims if 0);
	// a request's "dimensions" may ask for fewer.
	EmbeddingDims int
	// Now gives the "created" time of responses; time.Now if nil.
	Now func() time.Time
}

// Validate reports whether c can build an Engine.
func (c Config) Validate() error {
	switch {
	case c.Latency.TTFT < 0 || c.Latency.PerToken < 0:
		return fmt.Errorf("%w: negative latency", ErrInvalidConfig)
	case c.EmbeddingDims < 0 || c.EmbeddingDims > MaxEmbeddingDims:
		return fmt.Errorf("%w: embedding dims %d outside 0..%d", ErrInvalidConfig, c.EmbeddingDims, MaxEmbeddingDims)
	case len(c.ModelID) > 256:
		return fmt.Errorf("%w: model id longer than 256 bytes", ErrInvalidConfig)
	}
	for _, r := range c.ModelID {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: model id has a control character", ErrInvalidConfig)
		}
	}
	return nil
}

// Engine is the builtin engine. It implements engine.Engine.
type Engine struct {
	cfg         Config
	codec       tokenizer.Codec
	m           *model
	fingerprint string
	roleTokens  map[string]int
	// sleep waits d unless ctx ends or stop closes; tests replace it to
	// observe the latency profile without timing assertions.
	sleep func(ctx context.Context, d time.Duration, stop <-chan struct{}) error
}

var _ engine.Engine = (*Engine)(nil)

// New builds the tokenizer and the language model; it costs tens of
// milliseconds, so build one Engine and share it.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ModelID == "" {
		cfg.ModelID = DefaultModelID
	}
	if cfg.Created.IsZero() {
		cfg.Created = time.Unix(DefaultCreatedUnix, 0).UTC()
	}
	if cfg.EmbeddingDims == 0 {
		cfg.EmbeddingDims = DefaultEmbeddingDims
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	codec, err := tokenizer.Get(tokenizer.Cl100kBase)
	if err != nil {
		return nil, fmt.Errorf("loading cl100k_base tokenizer: %w", err)
	}
	ids, toks, err := codec.Encode(corpusText)
	if err != nil {
		return nil, fmt.Errorf("tokenizing corpus: %w", err)
	}
	m, err := buildModel(ids, toks)
	if err != nil {
		return nil, fmt.Errorf("building language model: %w", err)
	}
	e := &Engine{cfg: cfg, codec: codec, m: m, sleep: sleepCtx}
	sum := sha256.Sum256([]byte(modelVersion + "\x00" + corpusText))
	e.fingerprint = "fp_" + hex.EncodeToString(sum[:5])
	e.roleTokens = make(map[string]int, 4)
	for _, r := range []string{"system", "developer", "user", "assistant"} {
		n, err := codec.Count(r)
		if err != nil {
			return nil, fmt.Errorf("counting role tokens: %w", err)
		}
		e.roleTokens[r] = n
	}
	return e, nil
}

// ModelID returns the id of the model the engine serves.
func (e *Engine) ModelID() string { return e.cfg.ModelID }

// Models lists the single model the engine serves.
func (e *Engine) Models(ctx context.Context) ([]engine.Model, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return []engine.Model{{
		ID:      e.cfg.ModelID,
		Object:  "model",
		Created: e.cfg.Created.Unix(),
		OwnedBy: "teegate",
	}}, nil
}

// Do performs one call. Non-stream results are generated (and the latency
// profile waited) before Do returns; streamed results generate lazily in
// Stream.Next. call.Stream decides the result's shape.
func (e *Engine) Do(ctx context.Context, call engine.Call) (*engine.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch call.Op {
	case engine.OpChatCompletions, engine.OpCompletions:
		p, err := e.plan(call)
		if err != nil {
			return nil, err
		}
		if call.Stream {
			return &engine.Result{Stream: newStream(e, p)}, nil
		}
		body, err := e.runBody(ctx, p)
		if err != nil {
			return nil, err
		}
		return &engine.Result{Body: body}, nil
	case engine.OpResponses:
		return e.respond(ctx, call)
	case engine.OpEmbeddings:
		if call.Stream {
			return nil, engine.InvalidRequest("stream", "embeddings cannot be streamed")
		}
		body, err := e.embed(call.Body)
		if err != nil {
			return nil, err
		}
		return &engine.Result{Body: body}, nil
	}
	return nil, engine.Errorf(404, "invalid_request_error", "", "unknown_url", "unknown operation")
}

// respond answers the Responses API natively: the request becomes the
// equivalent chat request, generated by this engine in-process, and the
// result is written as a response object or Responses event stream
// (package responses), so both APIs give the same text for the same input.
func (e *Engine) respond(ctx context.Context, call engine.Call) (*engine.Result, error) {
	req, err := responses.ParseRequest(call.Body)
	if err != nil {
		return nil, err
	}
	if err := checkModel(e, &req.Model); err != nil {
		return nil, err
	}
	chat := engine.Call{Op: engine.OpChatCompletions, Body: req.ChatBody(), Stream: req.Stream, RequestID: call.RequestID}
	p, err := e.plan(chat)
	if err != nil {
		return nil, err
	}
	id := responses.ResponseID(call.RequestID)
	if call.RequestID == "" {
		id = "resp_" + p.id[len("chatcmpl-"):]
	}
	if req.Stream {
		now := func() int64 { return e.cfg.Now().Unix() }
		return &engine.Result{Stream: responses.NewChatStream(req, id, p.created, now, newStream(e, p))}, nil
	}
	body, err := e.runBody(ctx, p)
	if err != nil {
		return nil, err
	}
	out, err := responses.FromChat(req, id, p.created, body)
	if err != nil {
		return nil, err
	}
	return &engine.Result{Body: out}, nil
}

// sleepCtx waits d with a timer, so a cancelled request or a closed stream
// stops waiting at once instead of burning the rest of the delay.
func sleepCtx(ctx context.Context, d time.Duration, stop <-chan struct{}) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return ErrStreamClosed
	}
}
