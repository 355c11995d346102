package gateway

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/teegate/teegate/worker/wire"
)

func TestValidate(t *testing.T) {
	ok := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	cases := []struct {
		name, op, body string
		status         int
		param          string
		stream         bool
	}{
		{"ok", wire.OpChat, ok, 0, "", false},
		{"stream", wire.OpChat, `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`, 0, "", true},
		{"empty", wire.OpChat, ``, 400, "", false},
		{"not object", wire.OpChat, `[1]`, 400, "", false},
		{"syntax", wire.OpChat, `{"model":`, 400, "", false},
		{"trailing", wire.OpChat, ok + `{}`, 400, "", false},
		{"no model", wire.OpChat, `{"messages":[{"role":"user","content":"hi"}]}`, 400, "model", false},
		{"model wrong type", wire.OpChat, `{"model":5,"messages":[]}`, 400, "model", false},
		{"no messages", wire.OpChat, `{"model":"m"}`, 400, "messages", false},
		{"empty messages", wire.OpChat, `{"model":"m","messages":[]}`, 400, "messages", false},
		{"no role", wire.OpChat, `{"model":"m","messages":[{"content":"hi"}]}`, 400, "messages[0].role", false},
		{"bad role", wire.OpChat, `{"model":"m","messages":[{"role":"wizard","content":"hi"}]}`, 400, "messages[0].role", false},
		{"stream wrong type", wire.OpChat, `{"model":"m","messages":[{"role":"user"}],"stream":"yes"}`, 400, "stream", false},
		{"stream_options without stream", wire.OpChat, `{"model":"m","messages":[{"role":"user"}],"stream_options":{"include_usage":true}}`, 400, "stream_options", false},
		{"n zero", wire.OpChat, `{"model":"m","messages":[{"role":"user"}],"n":0}`, 400, "n", false},
		{"max_tokens zero", wire.OpChat, `{"model":"m","messages":[{"role":"user"}],"max_tokens":0}`, 400, "max_tokens", false},
		{"max_completion_tokens negative", wire.OpChat, `{"model":"m","messages":[{"role":"user"}],"max_completion_tokens":-1}`, 400, "max_completion_tokens", false},
		{"temperature high", wire.OpChat, `{"model":"m","messages":[{"role":"user"}],"temperature":2.5}`, 400, "temperature", false},
		{"top_p high", wire.OpChat, `{"model":"m","messages":[{"role":"user"}],"top_p":1.5}`, 400, "top_p", false},
		{"stop string", wire.OpChat, `{"model":"m","messages":[{"role":"user"}],"stop":"x"}`, 0, "", false},
		{"stop five", wire.OpChat, `{"model":"m","messages":[{"role":"user"}],"stop":["a","b","c","d","e"]}`, 400, "stop", false},
		{"stop number", wire.OpChat, `{"model":"m","messages":[{"role":"user"}],"stop":5}`, 400, "stop", false},
		{"seed float", wire.OpChat, `{"model":"m","messages":[{"role":"user"}],"seed":1.5}`, 400, "seed", false},
		{"tools pass", wire.OpChat, `{"model":"m","messages":[{"role":"user"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto"}`, 0, "", false},
		{"response_format no type", wire.OpChat, `{"model":"m","messages":[{"role":"user"}],"response_format":{}}`, 400, "response_format.type", false},
		{"completion ok", wire.OpCompletions, `{"model":"m","prompt":"x"}`, 0, "", false},
		{"completion no prompt", wire.OpCompletions, `{"model":"m"}`, 400, "prompt", false},
		{"embedding ok", wire.OpEmbeddings, `{"model":"m","input":["a","b"]}`, 0, "", false},
		{"embedding no input", wire.OpEmbeddings, `{"model":"m"}`, 400, "input", false},
		{"embedding stream", wire.OpEmbeddings, `{"model":"m","input":"a","stream":true}`, 400, "stream", false},
		{"responses ok", wire.OpResponses, `{"model":"m","input":"x","instructions":null,"previous_response_id":null}`, 0, "", false},
		{"responses items stream", wire.OpResponses, `{"model":"m","input":[{"role":"user","content":"x"}],"stream":true}`, 0, "", true},
		{"responses no input", wire.OpResponses, `{"model":"m"}`, 400, "input", false},
		{"responses input object", wire.OpResponses, `{"model":"m","input":{}}`, 400, "input", false},
		{"responses previous_response_id", wire.OpResponses, `{"model":"m","input":"x","previous_response_id":"resp_1"}`, 400, "previous_response_id", false},
		{"responses conversation", wire.OpResponses, `{"model":"m","input":"x","conversation":"c"}`, 400, "conversation", false},
		{"responses background", wire.OpResponses, `{"model":"m","input":"x","background":true}`, 400, "background", false},
		{"responses instructions number", wire.OpResponses, `{"model":"m","input":"x","instructions":1}`, 400, "instructions", false},
		{"responses max_output_tokens zero", wire.OpResponses, `{"model":"m","input":"x","max_output_tokens":0}`, 400, "max_output_tokens", false},
		{"responses temperature", wire.OpResponses, `{"model":"m","input":"x","temperature":9}`, 400, "temperature", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, e := validate(c.op, []byte(c.body))
			if c.status == 0 {
				if e != nil {
					t.Fatalf("unexpected error %+v", e)
				}
				if p.Model != "m" || p.Stream != c.stream {
					t.Fatalf("parsed %+v", p)
				}
				return
			}
			if e == nil {
				t.Fatal("accepted")
			}
			if e.Status != c.status || e.Param != c.param || e.Type != "invalid_request_error" {
				t.Fatalf("got %d param %q type %q (%s)", e.Status, e.Param, e.Type, e.Message)
			}
		})
	}
}

// Error messages never echo request content besides the model id.
func TestValidateDoesNotEchoContent(t *testing.T) {
	const secret = "zanzibarquokka"
	bodies := []string{
		`{"model":"m","messages":[{"role":"` + secret + `","content":"` + secret + `"}]}`,
		`{"model":"m","messages":[{"role":"user","content":"` + secret + `"}],"temperature":9}`,
		`{"model":"m","messages":[{"role":"user","content":"` + secret + `"`,
	}
	for _, b := range bodies {
		_, e := validate(wire.OpChat, []byte(b))
		if e == nil || strings.Contains(string(e.Body()), secret) {
			t.Fatalf("error %v for %s", e, b)
		}
	}
}

func FuzzValidate(f *testing.F) {
	f.Add(wire.OpChat, []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`))
	f.Add(wire.OpCompletions, []byte(`{"model":"m","prompt":["a"],"stop":["x"]}`))
	f.Add(wire.OpEmbeddings, []byte(`{"model":"m","input":[[1,2]]}`))
	f.Add(wire.OpChat, []byte(`{"model":"m","messages":[{"role":"user"}],"temperature":NaN}`))
	f.Fuzz(func(t *testing.T, op string, body []byte) {
		p, e := validate(op, body)
		if e != nil {
			if e.Status != 400 || e.Type != "invalid_request_error" || len(e.Body()) == 0 {
				t.Fatalf("bad error %+v", e)
			}
			return
		}
		if p.Model == "" {
			t.Fatal("accepted without a model")
		}
	})
}

// writeEvent frames any payload so that an SSE reader recovers it.
func FuzzWriteEvent(f *testing.F) {
	f.Add([]byte(`{"a":1}`))
	f.Add([]byte("line1\nline2"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, payload []byte) {
		if bytes.ContainsRune(payload, '\r') {
			return // CR is a line terminator in SSE; JSON payloads never hold a raw one
		}
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		writeEvent(w, payload)
		_ = w.Flush()
		out := buf.String()
		if !strings.HasSuffix(out, "\n\n") {
			t.Fatalf("event not terminated: %q", out)
		}
		var lines []string
		for _, l := range strings.Split(strings.TrimSuffix(out, "\n\n"), "\n") {
			d, ok := strings.CutPrefix(l, "data: ")
			if !ok {
				t.Fatalf("line %q is not a data line", l)
			}
			lines = append(lines, d)
		}
		if got := strings.Join(lines, "\n"); got != string(payload) {
			t.Fatalf("payload %q came back as %q", payload, got)
		}
	})
}

// BenchmarkValidate validates a chat request with an 8 KiB conversation
// (the gateway's JSON work per request before dispatch).
func BenchmarkValidate(b *testing.B) {
	long := strings.Repeat("lighthouse keepers ", 8<<10/19)
	body := []byte(`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"` + long +
		`"}],"max_tokens":16,"temperature":0.7,"stream":true,"stream_options":{"include_usage":true}}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, e := validate(wire.OpChat, body); e != nil {
			b.Fatal(e)
		}
	}
}
