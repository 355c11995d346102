package builtin

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/teegate/teegate/worker/engine"
)

func TestValidationErrors(t *testing.T) {
	e := testEngine(t)
	user := `"messages":[{"role":"user","content":"hi"}]`
	chat := func(extra string) string { return `{"model":"teegate-builtin",` + user + extra + `}` }
	cmpl := func(extra string) string { return `{"model":"teegate-builtin","prompt":"hi"` + extra + `}` }
	emb := func(extra string) string { return `{"model":"teegate-builtin"` + extra + `}` }
	null := "<null>"
	cases := []struct {
		name   string
		op     engine.Op
		stream bool
		body   string
		status int
		param  string // null for no param
		code   string // null for no code
	}{
		{"bad json", chatOp, false, `{"model": `, 400, null, null},
		{"syntax", chatOp, false, `{"model":"teegate-builtin",,}`, 400, null, null},
		{"empty body", chatOp, false, ``, 400, null, null},
		{"not an object", chatOp, false, `[1,2]`, 400, null, null},
		{"no model", chatOp, false, `{` + user + `}`, 400, "model", null},
		{"model wrong type", chatOp, false, `{"model":5,` + user + `}`, 400, "model", null},
		{"unknown model", chatOp, false, `{"model":"gpt-9",` + user + `}`, 404, null, "model_not_found"},
		{"unknown model completions", cmplOp, false, `{"model":"x","prompt":"a"}`, 404, null, "model_not_found"},
		{"unknown model embeddings", embOp, false, `{"model":"x","input":"a"}`, 404, null, "model_not_found"},
		{"no messages", chatOp, false, `{"model":"teegate-builtin"}`, 400, "messages", null},
		{"null messages", chatOp, false, `{"model":"teegate-builtin","messages":null}`, 400, "messages", null},
		{"empty messages", chatOp, false, `{"model":"teegate-builtin","messages":[]}`, 400, "messages", null},
		{"messages not array", chatOp, false, `{"model":"teegate-builtin","messages":"hi"}`, 400, "messages", null},
		{"message not object", chatOp, false, `{"model":"teegate-builtin","messages":[1]}`, 400, "messages[0]", null},
		{"no role", chatOp, false, `{"model":"teegate-builtin","messages":[{"content":"hi"}]}`, 400, "messages[0].role", null},
		{"bad role", chatOp, false, `{"model":"teegate-builtin","messages":[{"role":"user","content":"a"},{"role":"wizard","content":"hi"}]}`, 400, "messages[1].role", null},
		{"role wrong type", chatOp, false, `{"model":"teegate-builtin","messages":[{"role":7,"content":"hi"}]}`, 400, "messages[0].role", null},
		{"tool role", chatOp, false, `{"model":"teegate-builtin","messages":[{"role":"tool","content":"hi","tool_call_id":"x"}]}`, 400, "messages[0].role", null},
		{"no content", chatOp, false, `{"model":"teegate-builtin","messages":[{"role":"user"}]}`, 400, "messages[0].content", null},
		{"content number", chatOp, false, `{"model":"teegate-builtin","messages":[{"role":"user","content":5}]}`, 400, "messages[0].content", null},
		{"content empty parts", chatOp, false, `{"model":"teegate-builtin","messages":[{"role":"user","content":[]}]}`, 400, "messages[0].content", null},
		{"content image", chatOp, false, `{"model":"teegate-builtin","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, "messages[0].content[0].type", null},
		{"content part no text", chatOp, false, `{"model":"teegate-builtin","messages":[{"role":"user","content":[{"type":"text"}]}]}`, 400, "messages[0].content[0].text", null},
		{"content part bad type", chatOp, false, `{"model":"teegate-builtin","messages":[{"role":"user","content":[{"type":"video"}]}]}`, 400, "messages[0].content[0].type", null},
		{"user refusal part", chatOp, false, `{"model":"teegate-builtin","messages":[{"role":"user","content":[{"type":"refusal","refusal":"no"}]}]}`, 400, "messages[0].content[0].type", null},
		{"name wrong type", chatOp, false, `{"model":"teegate-builtin","messages":[{"role":"user","content":"a","name":3}]}`, 400, "messages[0].name", null},
		{"assistant tool_calls", chatOp, false, `{"model":"teegate-builtin","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]}]}`, 400, "messages[0].tool_calls", null},
		{"temperature type", chatOp, false, chat(`,"temperature":"hot"`), 400, "temperature", null},
		{"temperature high", chatOp, false, chat(`,"temperature":2.5`), 400, "temperature", null},
		{"temperature negative", chatOp, false, chat(`,"temperature":-0.1`), 400, "temperature", null},
		{"top_p high", chatOp, false, chat(`,"top_p":1.5`), 400, "top_p", null},
		{"n zero", chatOp, false, chat(`,"n":0`), 400, "n", null},
		{"n 17", chatOp, false, chat(`,"n":17`), 400, "n", null},
		{"n float", chatOp, false, chat(`,"n":1.5`), 400, "n", null},
		{"max_tokens zero", chatOp, false, chat(`,"max_tokens":0`), 400, "max_tokens", null},
		{"max_tokens huge", chatOp, false, chat(`,"max_tokens":4097`), 400, "max_tokens", null},
		{"max_tokens string", chatOp, false, chat(`,"max_tokens":"5"`), 400, "max_tokens", null},
		{"max_completion_tokens neg", chatOp, false, chat(`,"max_completion_tokens":-1`), 400, "max_completion_tokens", null},
		{"seed float", chatOp, false, chat(`,"seed":0.5`), 400, "seed", null},
		{"stream type", chatOp, false, chat(`,"stream":"yes"`), 400, "stream", null},
		{"stream_options without stream", chatOp, false, chat(`,"stream_options":{"include_usage":true}`), 400, "stream_options", null},
		{"include_usage type", chatOp, true, chat(`,"stream":true,"stream_options":{"include_usage":1}`), 400, "stream_options.include_usage", null},
		{"stop five", chatOp, false, chat(`,"stop":["a","b","c","d","e"]`), 400, "stop", null},
		{"stop number", chatOp, false, chat(`,"stop":5`), 400, "stop", null},
		{"stop array of numbers", chatOp, false, chat(`,"stop":[5]`), 400, "stop", null},
		{"presence_penalty", chatOp, false, chat(`,"presence_penalty":3`), 400, "presence_penalty", null},
		{"frequency_penalty", chatOp, false, chat(`,"frequency_penalty":-2.5`), 400, "frequency_penalty", null},
		{"user type", chatOp, false, chat(`,"user":1`), 400, "user", null},
		{"tools", chatOp, false, chat(`,"tools":[{"type":"function","function":{"name":"f"}}]`), 400, "tools", null},
		{"tool_choice", chatOp, false, chat(`,"tool_choice":"auto"`), 400, "tool_choice", null},
		{"functions", chatOp, false, chat(`,"functions":[{"name":"f"}]`), 400, "functions", null},
		{"json_object", chatOp, false, chat(`,"response_format":{"type":"json_object"}`), 400, "response_format", null},
		{"json_schema", chatOp, false, chat(`,"response_format":{"type":"json_schema","json_schema":{}}`), 400, "response_format", null},
		{"response_format bad", chatOp, false, chat(`,"response_format":{"type":"yaml"}`), 400, "response_format.type", null},
		{"response_format no type", chatOp, false, chat(`,"response_format":{}`), 400, "response_format.type", null},
		{"logprobs", chatOp, false, chat(`,"logprobs":true`), 400, "logprobs", null},
		{"top_logprobs", chatOp, false, chat(`,"top_logprobs":3`), 400, "top_logprobs", null},
		{"context window", chatOp, false, `{"model":"teegate-builtin","max_tokens":4096,"messages":[{"role":"user","content":"` + strings.Repeat("lighthouse ", 29000) + `"}]}`, 400, "messages", "context_length_exceeded"},
		{"no prompt", cmplOp, false, `{"model":"teegate-builtin"}`, 400, "prompt", null},
		{"prompt number", cmplOp, false, `{"model":"teegate-builtin","prompt":5}`, 400, "prompt", null},
		{"prompt empty array", cmplOp, false, `{"model":"teegate-builtin","prompt":[]}`, 400, "prompt", null},
		{"prompt mixed", cmplOp, false, `{"model":"teegate-builtin","prompt":["a",1]}`, 400, "prompt", null},
		{"prompt bad token", cmplOp, false, `{"model":"teegate-builtin","prompt":[100257]}`, 400, "prompt", null},
		{"prompt negative token", cmplOp, false, `{"model":"teegate-builtin","prompt":[-1]}`, 400, "prompt", null},
		{"prompt empty token list", cmplOp, false, `{"model":"teegate-builtin","prompt":[[]]}`, 400, "prompt", null},
		{"suffix", cmplOp, false, cmpl(`,"suffix":"end"`), 400, "suffix", null},
		{"completion logprobs", cmplOp, false, cmpl(`,"logprobs":2`), 400, "logprobs", null},
		{"best_of", cmplOp, false, cmpl(`,"best_of":3`), 400, "best_of", null},
		{"echo type", cmplOp, false, cmpl(`,"echo":"yes"`), 400, "echo", null},
		{"too many choices", cmplOp, false, `{"model":"teegate-builtin","prompt":["a","b","c","d","e"],"n":16}`, 400, "n", null},
		{"completion temperature", cmplOp, false, cmpl(`,"temperature":9`), 400, "temperature", null},
		{"no input", embOp, false, emb(``), 400, "input", null},
		{"empty input", embOp, false, emb(`,"input":""`), 400, "input", null},
		{"empty input list", embOp, false, emb(`,"input":[]`), 400, "input", null},
		{"empty string in list", embOp, false, emb(`,"input":["a",""]`), 400, "input", null},
		{"input object", embOp, false, emb(`,"input":{}`), 400, "input", null},
		{"input bad token", embOp, false, emb(`,"input":[999999]`), 400, "input", null},
		{"input mixed", embOp, false, emb(`,"input":[[1],"a"]`), 400, "input", null},
		{"dimensions zero", embOp, false, emb(`,"input":"a","dimensions":0`), 400, "dimensions", null},
		{"dimensions huge", embOp, false, emb(`,"input":"a","dimensions":257`), 400, "dimensions", null},
		{"encoding_format", embOp, false, emb(`,"input":"a","encoding_format":"hex"`), 400, "encoding_format", null},
		{"embeddings streamed", embOp, true, emb(`,"input":"a"`), 400, "stream", null},
		{"unknown op", engine.Op("images"), false, `{}`, 404, null, "unknown_url"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.Do(context.Background(), engine.Call{Op: tc.op, Body: []byte(tc.body), Stream: tc.stream})
			ee, ok := engine.AsError(err)
			if !ok {
				t.Fatalf("err = %v, want *engine.Error", err)
			}
			if ee.Status != tc.status || ee.Type != "invalid_request_error" {
				t.Fatalf("status %d type %q, want %d invalid_request_error (%s)", ee.Status, ee.Type, tc.status, ee.Message)
			}
			if got := deref(ee.Param); got != tc.param {
				t.Fatalf("param %q, want %q (%s)", got, tc.param, ee.Message)
			}
			if got := deref(ee.Code); got != tc.code {
				t.Fatalf("code %q, want %q", got, tc.code)
			}
			// The body is OpenAI's error shape, and never echoes prompt text.
			var wire struct {
				Error map[string]json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal(ee.Body(), &wire); err != nil || len(wire.Error) != 4 {
				t.Fatalf("error body %s", ee.Body())
			}
			if strings.Contains(ee.Message, "hi\"") || strings.Contains(ee.Message, "lighthouse") {
				t.Fatalf("message leaks prompt text: %s", ee.Message)
			}
		})
	}
}

func deref(p *string) string {
	if p == nil {
		return "<null>"
	}
	return *p
}

func TestUnknownModelMessage(t *testing.T) {
	e := testEngine(t)
	_, err := e.Do(context.Background(), engine.Call{Op: chatOp, Body: []byte(`{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}`)})
	ee, _ := engine.AsError(err)
	if ee == nil || ee.Message != "The model `gpt-9` does not exist or you do not have access to it." {
		t.Fatalf("got %v", err)
	}
	_, err = e.Do(context.Background(), engine.Call{Op: chatOp, Body: []byte(`{"model":"a\nb` + strings.Repeat("x", 100) + `","messages":[]}`)})
	ee, _ = engine.AsError(err)
	if ee == nil || strings.ContainsAny(ee.Message, "\n") || len(ee.Message) > 160 {
		t.Fatalf("model name not sanitized: %q", ee.Message)
	}
	_, err = e.Do(context.Background(), engine.Call{Op: chatOp, Body: []byte(`{"model":"teegate-builtin","messages":[{"role":"user","content":"w"}],"tools":[{"type":"function"}]}`)})
	if ee, _ = engine.AsError(err); ee == nil || ee.Message != "model teegate-builtin does not support tools" {
		t.Fatalf("tools error %v", err)
	}
}

// TestAcceptedEdgeCases covers inputs that must be accepted, not refused.
func TestAcceptedEdgeCases(t *testing.T) {
	e := testEngine(t)
	for name, body := range map[string]string{
		"tools empty":       `{"model":"teegate-builtin","messages":[{"role":"user","content":"a"}],"tools":[],"tool_choice":"none"}`,
		"response text":     `{"model":"teegate-builtin","messages":[{"role":"user","content":"a"}],"response_format":{"type":"text"}}`,
		"nulls":             `{"model":"teegate-builtin","messages":[{"role":"user","content":"a"}],"temperature":null,"top_p":null,"n":null,"stop":null,"seed":null,"max_tokens":null,"user":null,"tools":null,"logprobs":false}`,
		"unknown fields":    `{"model":"teegate-builtin","messages":[{"role":"user","content":"a"}],"logit_bias":{"50256":-100},"metadata":{"x":"y"},"store":false}`,
		"empty content":     `{"model":"teegate-builtin","messages":[{"role":"user","content":""}]}`,
		"only system":       `{"model":"teegate-builtin","messages":[{"role":"system","content":"You answer about bread."}]}`,
		"assistant refusal": `{"model":"teegate-builtin","messages":[{"role":"assistant","content":[{"type":"refusal","refusal":"no"}]},{"role":"user","content":"ok"}]}`,
		"unicode":           `{"model":"teegate-builtin","messages":[{"role":"user","content":"café — 灯塔 🌊 \u2028"}],"stop":"é"}`,
		"seed negative":     `{"model":"teegate-builtin","messages":[{"role":"user","content":"a"}],"seed":-9223372036854775808}`,
		"temperature edges": `{"model":"teegate-builtin","messages":[{"role":"user","content":"a"}],"temperature":2,"top_p":0.000001}`,
		"tiny temperature":  `{"model":"teegate-builtin","messages":[{"role":"user","content":"a"}],"temperature":0.0001}`,
	} {
		t.Run(name, func(t *testing.T) {
			b := mustBody(t, e, chatOp, body)
			if !json.Valid(b) {
				t.Fatalf("invalid JSON %s", b)
			}
		})
	}
	b := mustBody(t, e, cmplOp, `{"model":"teegate-builtin","prompt":"","best_of":1,"suffix":null,"logprobs":null}`)
	if !bytes.Contains(b, []byte(`"finish_reason":"length"`)) {
		t.Fatalf("empty prompt: %s", b)
	}
}
