package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker/engine/builtin"
	"github.com/teegate/teegate/worker/wire"
)

const model = "teegate-builtin"

func newClient(s *stack.Stack, key string, opts ...option.RequestOption) openai.Client {
	all := append([]option.RequestOption{option.WithBaseURL(s.URL + "/v1"), option.WithAPIKey(key), option.WithMaxRetries(0)}, opts...)
	return openai.NewClient(all...)
}

func apiError(t *testing.T, err error) *openai.Error {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not an *openai.Error", err)
	}
	return e
}

func TestSDKChat(t *testing.T) {
	s := stacktest.Start(t)
	c := newClient(s, stacktest.APIKey)
	ctx := context.Background()
	var raw *http.Response
	r, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:       model,
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Tell me about lighthouses.")},
		MaxTokens:   openai.Int(24),
		Seed:        openai.Int(7),
		Temperature: openai.Float(0.7),
		TopP:        openai.Float(0.9),
		N:           openai.Int(2),
		User:        openai.String("tester"),
		Stop:        openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{"\n\n"}},
	}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Choices) != 2 || r.Choices[0].Message.Content == "" {
		t.Fatalf("want 2 non-empty choices, got %+v", r.Choices)
	}
	if r.Usage.TotalTokens <= 0 || r.Usage.CompletionTokens <= 0 {
		t.Fatalf("usage = %+v", r.Usage)
	}
	if raw.Header.Get("x-request-id") == "" || raw.Header.Get("openai-processing-ms") == "" {
		t.Fatalf("missing x-request-id / openai-processing-ms: %v", raw.Header)
	}
	// The same request with the same seed gives the same text.
	r2, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Tell me about lighthouses.")},
		MaxTokens: openai.Int(24), Seed: openai.Int(7), Temperature: openai.Float(0.7), TopP: openai.Float(0.9), N: openai.Int(2),
		User: openai.String("tester"), Stop: openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{"\n\n"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Choices[0].Message.Content != r.Choices[0].Message.Content {
		t.Fatal("same seed gave different text")
	}
}

func TestSDKChatStream(t *testing.T) {
	s := stacktest.Start(t)
	c := newClient(s, stacktest.APIKey)
	stream := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model:         model,
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello there")},
		MaxTokens:     openai.Int(20),
		Seed:          openai.Int(3),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		chunks++
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if chunks < 3 || acc.Choices[0].Message.Content == "" {
		t.Fatalf("chunks=%d content=%q", chunks, acc.Choices[0].Message.Content)
	}
	if acc.Usage.CompletionTokens != 20 {
		t.Fatalf("usage.completion_tokens = %d, want 20", acc.Usage.CompletionTokens)
	}
	// Streamed text equals the non-stream text for the same request.
	r, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello there")},
		MaxTokens: openai.Int(20), Seed: openai.Int(3),
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Choices[0].Message.Content != acc.Choices[0].Message.Content {
		t.Fatalf("stream %q != non-stream %q", acc.Choices[0].Message.Content, r.Choices[0].Message.Content)
	}
}

func TestSDKCompletionsEmbeddingsModels(t *testing.T) {
	s := stacktest.Start(t)
	c := newClient(s, stacktest.APIKey)
	ctx := context.Background()
	comp, err := c.Completions.New(ctx, openai.CompletionNewParams{
		Model: openai.CompletionNewParamsModel(model), Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens: openai.Int(10),
	})
	if err != nil {
		t.Fatal(err)
	}
	if comp.Choices[0].Text == "" || comp.Usage.TotalTokens == 0 {
		t.Fatalf("completion = %+v", comp)
	}
	cs := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model: openai.CompletionNewParamsModel(model), Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens: openai.Int(10),
	})
	var text strings.Builder
	for cs.Next() {
		for _, ch := range cs.Current().Choices {
			text.WriteString(ch.Text)
		}
	}
	if err := cs.Err(); err != nil || text.Len() == 0 {
		t.Fatalf("completion stream: %v, %q", err, text.String())
	}
	emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: model, Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a lighthouse", "a garden"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(emb.Data) != 2 || len(emb.Data[0].Embedding) == 0 {
		t.Fatalf("embeddings = %d vectors", len(emb.Data))
	}
	page, err := c.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != model {
		t.Fatalf("models = %+v", page.Data)
	}
	m, err := c.Models.Get(ctx, model)
	if err != nil || m.ID != model {
		t.Fatalf("model get = %+v, %v", m, err)
	}
	_, err = c.Models.Get(ctx, "no-such-model")
	if e := apiError(t, err); e.StatusCode != 404 || e.Code != "model_not_found" {
		t.Fatalf("get unknown model: %d %q", e.StatusCode, e.Code)
	}
}

func TestSDKErrors(t *testing.T) {
	s := stacktest.Start(t, func(c *stack.Config) {
		c.Gateway.BodyLimit = 64 << 10
	})
	ctx := context.Background()
	c := newClient(s, stacktest.APIKey)
	chat := func(c openai.Client, p openai.ChatCompletionNewParams, opts ...option.RequestOption) error {
		_, err := c.Chat.Completions.New(ctx, p, opts...)
		return err
	}
	hello := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}

	t.Run("unknown model 404", func(t *testing.T) {
		e := apiError(t, chat(c, openai.ChatCompletionNewParams{Model: "no-such-model", Messages: hello}))
		if e.StatusCode != 404 || e.Code != "model_not_found" || e.Type != "invalid_request_error" {
			t.Fatalf("got %d %q %q", e.StatusCode, e.Type, e.Code)
		}
	})
	t.Run("malformed JSON 400", func(t *testing.T) {
		e := apiError(t, chat(c, openai.ChatCompletionNewParams{}, option.WithRequestBody("application/json", []byte(`{"model":`))))
		if e.StatusCode != 400 || e.Type != "invalid_request_error" {
			t.Fatalf("got %d %q", e.StatusCode, e.Type)
		}
	})
	t.Run("bad parameter 400 names the param", func(t *testing.T) {
		e := apiError(t, chat(c, openai.ChatCompletionNewParams{Model: model, Messages: hello, Temperature: openai.Float(3)}))
		if e.StatusCode != 400 || e.Param != "temperature" {
			t.Fatalf("got %d param %q", e.StatusCode, e.Param)
		}
	})
	t.Run("engine rejects tools 400", func(t *testing.T) {
		e := apiError(t, chat(c, openai.ChatCompletionNewParams{Model: model, Messages: hello, Tools: []openai.ChatCompletionToolUnionParam{
			openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{Name: "get_weather"}),
		}}))
		if e.StatusCode != 400 {
			t.Fatalf("got %d", e.StatusCode)
		}
	})
	t.Run("wrong key 401", func(t *testing.T) {
		e := apiError(t, chat(newClient(s, "sk-wrong"), openai.ChatCompletionNewParams{Model: model, Messages: hello}))
		if e.StatusCode != 401 || e.Code != "invalid_api_key" {
			t.Fatalf("got %d %q", e.StatusCode, e.Code)
		}
	})
	t.Run("missing key 401", func(t *testing.T) {
		if resp, _ := getAs(t, s.URL+"/v1/models", ""); resp.StatusCode != 401 {
			t.Fatalf("got %d", resp.StatusCode)
		}
	})
	t.Run("body too large 413", func(t *testing.T) {
		big := strings.Repeat("lighthouse ", 10_000)
		e := apiError(t, chat(c, openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(big)}}))
		if e.StatusCode != 413 {
			t.Fatalf("got %d", e.StatusCode)
		}
		if e.Response.Header.Get("x-request-id") == "" {
			t.Fatal("413 without x-request-id")
		}
	})
	t.Run("no responders 503", func(t *testing.T) {
		// A registry record for a model nobody subscribes to: the gateway
		// routes it and NATS answers "no responders" at once. (The record
		// says it is ready: a worker that is not would be waited for, as
		// in a cold start.)
		kv, err := s.JS.KeyValue(ctx, wire.RegistryBucket)
		if err != nil {
			t.Fatal(err)
		}
		rec, _ := json.Marshal(wire.WorkerRecord{ID: "ghost", Version: wire.Version, Models: []wire.ModelInfo{{ID: "ghost-model"}}, Ready: true, MaxConcurrency: 4, HeartbeatAt: time.Now()})
		if _, err := kv.Put(ctx, "ghost", rec); err != nil {
			t.Fatal(err)
		}
		stacktest.Eventually(t, 10*time.Second, func() bool { _, ok := s.Dir.Model("ghost-model"); return ok }, "ghost model")
		start := time.Now()
		e := apiError(t, chat(c, openai.ChatCompletionNewParams{Model: "ghost-model", Messages: hello}))
		if e.StatusCode != 503 || e.Response.Header.Get("Retry-After") == "" {
			t.Fatalf("got %d, Retry-After %q", e.StatusCode, e.Response.Header.Get("Retry-After"))
		}
		if !strings.Contains(e.Message, "No attested worker") {
			t.Fatalf("message %q", e.Message)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("no-responders took a timeout instead of failing fast")
		}
		// Streams too.
		st := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "ghost-model", Messages: hello})
		for st.Next() {
		}
		if e := apiError(t, st.Err()); e.StatusCode != 503 {
			t.Fatalf("stream got %d", e.StatusCode)
		}
		_ = kv.Delete(ctx, "ghost")
	})
}

func TestRateLimit429(t *testing.T) {
	s := stacktest.Start(t, func(c *stack.Config) { c.Gateway.DefaultRPM = 1 })
	c := newClient(s, stacktest.APIKey)
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, MaxTokens: openai.Int(4)}
	if _, err := c.Chat.Completions.New(ctx, params); err != nil {
		t.Fatal(err)
	}
	_, err := c.Chat.Completions.New(ctx, params)
	e := apiError(t, err)
	if e.StatusCode != 429 || e.Code != "rate_limit_exceeded" || e.Response.Header.Get("Retry-After") == "" ||
		e.Response.Header.Get("x-ratelimit-limit-requests") != "1" || e.Response.Header.Get("x-ratelimit-remaining-requests") != "0" {
		t.Fatalf("got %d %q headers %v", e.StatusCode, e.Code, e.Response.Header)
	}
}

func TestDeadline504(t *testing.T) {
	slow := stacktest.Builtin(t, builtin.Config{Latency: builtin.Latency{TTFT: time.Hour}})
	s := stacktest.Start(t, stacktest.WithEngines(slow), func(c *stack.Config) { c.Gateway.RequestTimeout = 300 * time.Millisecond })
	c := newClient(s, stacktest.APIKey)
	_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	if e := apiError(t, err); e.StatusCode != 504 {
		t.Fatalf("got %d", e.StatusCode)
	}
	st := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	for st.Next() {
	}
	// The stream's first chunk (the role delta) is out before the deadline,
	// so the deadline arrives as an error event inside the stream.
	if err := st.Err(); err == nil || !strings.Contains(err.Error(), "deadline_exceeded") {
		t.Fatalf("stream error = %v, want deadline_exceeded", err)
	}
}

func TestHealthAndUnknownRoute(t *testing.T) {
	s := stacktest.Start(t)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/v2/nothing": 404} {
		resp, body := getAs(t, s.URL+path, "")
		if resp.StatusCode != want {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		if resp.Header.Get("x-request-id") == "" {
			t.Fatalf("%s: no x-request-id", path)
		}
	}
}
