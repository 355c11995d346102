package builtin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/teegate/teegate/worker/engine"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var fixedNow = time.Unix(1_800_000_000, 0)

var (
	sharedOnce sync.Once
	sharedEng  *Engine
	sharedErr  error
)

// testEngine returns an engine shared by tests that do not change it; New
// is deterministic, so sharing hides nothing.
func testEngine(t testing.TB) *Engine {
	t.Helper()
	sharedOnce.Do(func() {
		sharedEng, sharedErr = New(Config{Now: func() time.Time { return fixedNow }})
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return sharedEng
}

func freshEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return fixedNow }
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// doCall runs a call and, for streams, drains every payload (copied).
func doCall(t testing.TB, e *Engine, op engine.Op, body string, stream bool) (res []byte, payloads [][]byte, err error) {
	t.Helper()
	r, err := e.Do(context.Background(), engine.Call{Op: op, Body: []byte(body), Stream: stream, RequestID: "req-1"})
	if err != nil {
		return nil, nil, err
	}
	if !stream {
		if r.Body == nil || r.Stream != nil {
			t.Fatalf("non-stream result has Body=%v Stream=%v", r.Body != nil, r.Stream != nil)
		}
		return r.Body, nil, nil
	}
	if r.Stream == nil || r.Body != nil {
		t.Fatalf("stream result has Body=%v Stream=%v", r.Body != nil, r.Stream != nil)
	}
	defer r.Stream.Close()
	for {
		p, err := r.Stream.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return nil, payloads, nil
		}
		if err != nil {
			return nil, payloads, err
		}
		payloads = append(payloads, bytes.Clone(p))
	}
}

func mustBody(t testing.TB, e *Engine, op engine.Op, body string) []byte {
	t.Helper()
	b, _, err := doCall(t, e, op, body, false)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	return b
}

func mustStream(t testing.TB, e *Engine, op engine.Op, body string) [][]byte {
	t.Helper()
	_, p, err := doCall(t, e, op, body, true)
	if err != nil {
		t.Fatalf("Do stream: %v", err)
	}
	return p
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type chatResp struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Created           int64  `json:"created"`
	Model             string `json:"model"`
	SystemFingerprint string `json:"system_fingerprint"`
	Choices           []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string          `json:"role"`
			Content string          `json:"content"`
			Refusal json.RawMessage `json:"refusal"`
		} `json:"message"`
		Text         string          `json:"text"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason string          `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

func parseResp(t testing.TB, b []byte) chatResp {
	t.Helper()
	var r chatResp
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("response is not the expected JSON: %v\n%s", err, b)
	}
	return r
}

type chunk struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Created           int64  `json:"created"`
	Model             string `json:"model"`
	SystemFingerprint string `json:"system_fingerprint"`
	Choices           []struct {
		Index int `json:"index"`
		Delta *struct {
			Role    *string         `json:"role"`
			Content *string         `json:"content"`
			Refusal json.RawMessage `json:"refusal"`
		} `json:"delta"`
		Text         *string         `json:"text"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason *string         `json:"finish_reason"`
	} `json:"choices"`
	Usage json.RawMessage `json:"usage"`
}

// streamSummary is what a client reassembles from a stream.
type streamSummary struct {
	texts    map[int]string
	finish   map[int]string
	usage    *usage
	nUsage   int // chunks carrying "usage":null
	chunks   []chunk
	roleSeen map[int]bool
}

func summarize(t testing.TB, payloads [][]byte, chat bool) streamSummary {
	t.Helper()
	s := streamSummary{texts: map[int]string{}, finish: map[int]string{}, roleSeen: map[int]bool{}}
	for k, p := range payloads {
		if !json.Valid(p) {
			t.Fatalf("payload %d is not JSON: %s", k, p)
		}
		var c chunk
		dec := json.NewDecoder(bytes.NewReader(p))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("payload %d: %v: %s", k, err, p)
		}
		s.chunks = append(s.chunks, c)
		if string(c.Usage) == "null" {
			s.nUsage++
		} else if len(c.Usage) > 0 {
			if len(c.Choices) != 0 {
				t.Fatalf("usage chunk with choices: %s", p)
			}
			var u usage
			if err := json.Unmarshal(c.Usage, &u); err != nil {
				t.Fatal(err)
			}
			s.usage = &u
			continue
		}
		if len(c.Choices) != 1 {
			t.Fatalf("chunk %d has %d choices", k, len(c.Choices))
		}
		ch := c.Choices[0]
		if _, done := s.finish[ch.Index]; done {
			t.Fatalf("chunk for choice %d after its finish", ch.Index)
		}
		if chat {
			if ch.Delta == nil {
				t.Fatalf("chat chunk without delta: %s", p)
			}
			if ch.Delta.Role != nil {
				if s.roleSeen[ch.Index] || *ch.Delta.Role != "assistant" {
					t.Fatalf("bad role chunk: %s", p)
				}
				s.roleSeen[ch.Index] = true
			} else if !s.roleSeen[ch.Index] {
				t.Fatalf("content before role for choice %d", ch.Index)
			}
			if ch.Delta.Content != nil {
				s.texts[ch.Index] += *ch.Delta.Content
			}
		} else if ch.Text != nil {
			s.texts[ch.Index] += *ch.Text
		}
		if ch.FinishReason != nil {
			s.finish[ch.Index] = *ch.FinishReason
		}
	}
	return s
}

func readRequests(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "requests", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no request seeds: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = b
	}
	return out
}
