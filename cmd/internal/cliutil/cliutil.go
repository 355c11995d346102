package cliutil

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/builtin"
	oaengine "github.com/teegate/teegate/worker/engine/openai"
)

// NewLogger returns a JSON logger on w at level ("debug", "info", "warn", "error").
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("parsing log level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// SignalContext is canceled on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// DefaultDataDir is a folder under the user's state directory:
// $XDG_STATE_HOME/teegate, else ~/.local/state/teegate.
func DefaultDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "teegate")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "teegate")
	}
	return filepath.Join(os.TempDir(), "teegate")
}

// EngineFlags are the flags that choose and configure a worker's engine.
type EngineFlags struct {
	Kind     string
	URL      string
	APIKey   string
	Model    string
	TTFT     time.Duration
	PerToken time.Duration
	Timeout  time.Duration
	// Responses is how the openai engine serves POST /v1/responses.
	Responses string
	// ModelRefresh is how often the worker re-reads the openai engine's
	// model list (worker.Config.ModelRefresh).
	ModelRefresh time.Duration
}

// Register adds the engine flags to fs.
func (f *EngineFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Kind, "engine", "builtin", "engine: builtin or openai (any OpenAI-compatible server: vLLM, SGLang, llama.cpp, Ollama, TGI)")
	fs.StringVar(&f.URL, "engine-url", "", "base URL of the OpenAI-compatible engine (with -engine openai), e.g. http://127.0.0.1:8000")
	fs.StringVar(&f.APIKey, "engine-api-key", "", "bearer key for the engine, if it needs one")
	fs.StringVar(&f.Model, "model", "", "model id for the builtin engine (default teegate-builtin)")
	fs.DurationVar(&f.TTFT, "latency-ttft", 0, "builtin engine: time to first token to imitate GPU decoding (e.g. 150ms)")
	fs.DurationVar(&f.PerToken, "latency-per-token", 0, "builtin engine: time per token to imitate GPU decoding (e.g. 20ms)")
	fs.DurationVar(&f.Timeout, "engine-timeout", 10*time.Minute, "openai engine: timeout of one non-stream call")
	fs.DurationVar(&f.ModelRefresh, "model-refresh", 15*time.Second, "openai engine: how often the worker re-reads the engine's model list (added models are offered, removed ones withdrawn, an engine that does not answer makes the worker not ready)")
	fs.StringVar(&f.Responses, "responses", "auto", "openai engine: POST /v1/responses as passthrough (to the engine's own /v1/responses, byte for byte),\n"+
		"translate (to chat completions) or auto (passthrough until the engine says it has no such endpoint)")
}

// Build makes the engine the flags describe.
func (f *EngineFlags) Build() (engine.Engine, error) {
	switch strings.ToLower(f.Kind) {
	case "builtin":
		e, err := builtin.New(builtin.Config{ModelID: f.Model, Latency: builtin.Latency{TTFT: f.TTFT, PerToken: f.PerToken}})
		if err != nil {
			return nil, fmt.Errorf("building builtin engine: %w", err)
		}
		return e, nil
	case "openai":
		if f.URL == "" {
			return nil, errors.New("-engine openai needs -engine-url")
		}
		mode, err := oaengine.ParseResponsesMode(f.Responses)
		if err != nil {
			return nil, err
		}
		e, err := oaengine.New(oaengine.Config{BaseURL: f.URL, APIKey: f.APIKey, Timeout: f.Timeout, Responses: mode, ModelRefresh: f.ModelRefresh})
		if err != nil {
			return nil, fmt.Errorf("building openai engine: %w", err)
		}
		return e, nil
	}
	return nil, fmt.Errorf("unknown engine %q (want builtin or openai)", f.Kind)
}
