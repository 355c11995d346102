package responses

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/teegate/teegate/worker/engine"
)

func TestParseRequestChatBody(t *testing.T) {
	body := `{"model":"m","instructions":"Be brief.","max_output_tokens":20,"temperature":0.5,"top_p":0.9,"user":"u1",
	"metadata":{"k":"v"},"stream":true,"parallel_tool_calls":false,
	"input":[{"role":"user","content":[{"type":"input_text","text":"Hi"},{"type":"input_text","text":"there"}]},
	 {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello"}]},
	 {"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},
	 {"type":"function_call_output","call_id":"c1","output":"42"},
	 {"role":"developer","content":"dev"}],
	"tools":[{"type":"function","name":"f","description":"d","parameters":{"type":"object"}}],
	"tool_choice":{"type":"function","name":"f"},
	"text":{"format":{"type":"json_schema","name":"s","schema":{"type":"object"},"strict":true}}}`
	r, err := ParseRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	var chat map[string]any
	if err := json.Unmarshal(r.ChatBody(), &chat); err != nil {
		t.Fatal(err)
	}
	want := `{"max_tokens":20,"messages":[{"content":"Be brief.","role":"system"},` +
		`{"content":[{"text":"Hi","type":"text"},{"text":"there","type":"text"}],"role":"user"},` +
		`{"content":[{"text":"Hello","type":"text"}],"role":"assistant"},` +
		`{"content":null,"role":"assistant","tool_calls":[{"function":{"arguments":"{}","name":"f"},"id":"c1","type":"function"}]},` +
		`{"content":"42","role":"tool","tool_call_id":"c1"},{"content":"dev","role":"developer"}],` +
		`"model":"m","parallel_tool_calls":false,` +
		`"response_format":{"json_schema":{"name":"s","schema":{"type":"object"},"strict":true},"type":"json_schema"},` +
		`"stream":true,"stream_options":{"include_usage":true},"temperature":0.5,` +
		`"tool_choice":{"function":{"name":"f"},"type":"function"},` +
		`"tools":[{"function":{"description":"d","name":"f","parameters":{"type":"object"}},"type":"function"}],"top_p":0.9,"user":"u1"}`
	got, _ := json.Marshal(chat)
	if string(got) != want {
		t.Fatalf("chat body\n got %s\nwant %s", got, want)
	}
}

func TestParseRequestErrors(t *testing.T) {
	for _, tc := range []struct{ body, param, code string }{
		{`[]`, "", ""},
		{`{"model":"m"}`, "input", ""},
		{`{"input":"x"}`, "model", ""},
		{`{"model":"m","input":"x","previous_response_id":"resp_1"}`, "previous_response_id", "stateless"},
		{`{"model":"m","input":"x","conversation":{"id":"c"}}`, "conversation", "stateless"},
		{`{"model":"m","input":"x","background":true}`, "background", "stateless"},
		{`{"model":"m","input":[{"type":"item_reference","id":"x"}]}`, "input[0].type", "stateless"},
		{`{"model":"m","input":[]}`, "input", ""},
		{`{"model":"m","input":[7]}`, "input[0]", ""},
		{`{"model":"m","input":[{"role":"user","content":[{"type":"output_text","text":"x"}]}]}`, "input[0].content[0].type", ""},
		{`{"model":"m","input":[{"role":"assistant","content":[{"type":"input_text","text":"x"}]}]}`, "input[0].content[0].type", ""},
		{`{"model":"m","input":[{"role":"user","content":[{"type":"input_text"}]}]}`, "input[0].content[0].text", ""},
		{`{"model":"m","input":[{"role":"user"}]}`, "input[0].content", ""},
		{`{"model":"m","input":[{"type":"function_call","name":"f","arguments":"{}"}]}`, "input[0].call_id", ""},
		{`{"model":"m","input":"x","tools":[{"type":"web_search"}]}`, "tools[0].type", ""},
		{`{"model":"m","input":"x","tool_choice":"sometimes"}`, "tool_choice", ""},
		{`{"model":"m","input":"x","text":{"format":{"type":"yaml"}}}`, "text.format.type", ""},
		{`{"model":"m","input":"x","max_output_tokens":0}`, "max_output_tokens", ""},
		{`{"model":"m","input":"x","instructions":5}`, "instructions", ""},
		{`{"model":"m","input":"x","metadata":[1]}`, "metadata", ""},
	} {
		_, err := ParseRequest([]byte(tc.body))
		e, ok := engine.AsError(err)
		if !ok || e.Status != 400 {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		param := ""
		if e.Param != nil {
			param = *e.Param
		}
		code := ""
		if e.Code != nil {
			code = *e.Code
		}
		if param != tc.param || code != tc.code {
			t.Errorf("%s: param %q code %q, want %q %q (%s)", tc.body, param, code, tc.param, tc.code, e.Message)
		}
		if tc.code == "stateless" && !strings.Contains(e.Message, StatelessHint) {
			t.Errorf("%s: message %q lacks the hint", tc.body, e.Message)
		}
	}
}

type chunks struct{ p []string }

func (c *chunks) Next(ctx context.Context) ([]byte, error) {
	if len(c.p) == 0 {
		return nil, io.EOF
	}
	p := c.p[0]
	c.p = c.p[1:]
	return []byte(p), nil
}
func (c *chunks) Close() error { return nil }

// A chat stream and the chat completion with the same content translate
// to the same response object: the stream's terminal event carries what
// the non-stream body is.
func TestTranslateStreamMatchesBody(t *testing.T) {
	req, err := ParseRequest([]byte(`{"model":"m","input":"hi","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	src := &chunks{p: []string{
		`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`,
		`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}`,
		`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}`,
		`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]},"finish_reason":null}]}`,
		`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":"tool_calls"}]}`,
		`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`,
	}}
	s := NewChatStream(req, "resp_x", 5, func() int64 { return 9 }, src)
	var names []string
	var last []byte
	for i := 0; ; i++ {
		p, err := s.Next(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var ev struct {
			Type string `json:"type"`
			Seq  int    `json:"sequence_number"`
		}
		if err := json.Unmarshal(p, &ev); err != nil || ev.Type != s.Event() || ev.Seq != i {
			t.Fatalf("event %d: %s (name %s)", i, p, s.Event())
		}
		names = append(names, ev.Type)
		last = append(last[:0], p...)
	}
	want := "response.created response.in_progress response.output_item.added response.content_part.added " +
		"response.output_text.delta response.output_text.delta response.output_text.done response.content_part.done " +
		"response.output_item.done response.output_item.added response.function_call_arguments.delta " +
		"response.function_call_arguments.delta response.function_call_arguments.done response.output_item.done response.completed"
	if strings.Join(names, " ") != want {
		t.Fatalf("events\n %s\nwant\n %s", strings.Join(names, " "), want)
	}
	var done struct {
		Response json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(last, &done); err != nil {
		t.Fatal(err)
	}
	req.Stream = false
	body, err := FromChat(req, "resp_x", 5, []byte(`{"id":"c","object":"chat.completion","created":5,"model":"up",
	"choices":[{"index":0,"message":{"role":"assistant","content":"Hello","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],
	"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`))
	if err != nil {
		t.Fatal(err)
	}
	// completed_at differs by construction (the stream's clock); align it.
	got := strings.Replace(string(done.Response), `"completed_at":9`, `"completed_at":5`, 1)
	if got != string(body) {
		t.Fatalf("stream final\n %s\nbody\n %s", got, body)
	}
	if !strings.Contains(string(body), `"usage":{"input_tokens":3,"input_tokens_details":{"cached_tokens":0},"output_tokens":4,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":7}`) ||
		!strings.Contains(string(body), `"type":"function_call","status":"completed","arguments":"{\"a\":1}","call_id":"call_1","name":"f"`) {
		t.Fatalf("body %s", body)
	}
}

func TestFinishReasons(t *testing.T) {
	req, _ := ParseRequest([]byte(`{"model":"m","input":"hi"}`))
	for reason, want := range map[string]string{"stop": `"status":"completed"`, "length": `"incomplete_details":{"reason":"max_output_tokens"}`, "content_filter": `"incomplete_details":{"reason":"content_filter"}`} {
		body, err := FromChat(req, "resp_x", 1, []byte(`{"model":"m","choices":[{"message":{"content":"x"},"finish_reason":"`+reason+`"}]}`))
		if err != nil || !strings.Contains(string(body), want) {
			t.Errorf("%s: %s %v", reason, body, err)
		}
	}
	if _, err := FromChat(req, "resp_x", 1, []byte(`not json`)); err == nil {
		t.Fatal("bad chat body accepted")
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","input":"x"}`,
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"x"}]}],"tools":[{"type":"function","name":"f"}],"tool_choice":"auto","text":{"format":{"type":"json_object"}}}`,
		`{"model":"m","input":[{"type":"function_call","call_id":"c","name":"f","arguments":""},{"type":"function_call_output","call_id":"c","output":"o"}]}`,
		`{"model":"m","input":"x","previous_response_id":null,"instructions":null,"metadata":{"a":"b"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err != nil {
			if _, ok := engine.AsError(err); !ok {
				t.Fatalf("error is not an *engine.Error: %v", err)
			}
			return
		}
		if !json.Valid(r.ChatBody()) {
			t.Fatalf("invalid chat body for %q", b)
		}
		em := NewEmitter(r, "resp_f", 1, "")
		em.Start()
		em.Text("x")
		em.Finish("stop", Usage{}, 1)
		if !json.Valid(em.Response()) {
			t.Fatalf("invalid response for %q", b)
		}
	})
}
