package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/client"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker/engine"
)

func responseParams(input string) responses.ResponseNewParams {
	return responses.ResponseNewParams{
		Model:           model,
		Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String(input)},
		Instructions:    openai.String("Answer briefly."),
		MaxOutputTokens: openai.Int(16),
	}
}

// The official Go SDK calls POST /v1/responses through the SDK middleware:
// non-stream and streamed answers have text and usage, and their receipts
// verify; the stream's receipt event passes through the SDK untouched.
func TestSDKResponses(t *testing.T) {
	s := stacktest.Start(t)
	c, _ := verifyingClient(t, s.URL, client.Config{})
	ctx := context.Background()

	var res client.Result
	r, err := c.Responses.New(client.WithResult(ctx, &res), responseParams("Tell me about lighthouses."))
	if err != nil {
		t.Fatalf("responses.New: %v", err)
	}
	if r.OutputText() == "" || r.Object != "response" || !strings.HasPrefix(r.ID, "resp_") {
		t.Fatalf("response: %+v", r)
	}
	if r.Usage.InputTokens <= 0 || r.Usage.OutputTokens <= 0 || r.Usage.TotalTokens != r.Usage.InputTokens+r.Usage.OutputTokens {
		t.Fatalf("usage: %+v", r.Usage)
	}
	if r.Status != "completed" && r.Status != "incomplete" {
		t.Fatalf("status %q", r.Status)
	}
	if f, ok := r.JSON.ExtraFields["store"]; !ok || f.Raw() != "false" {
		t.Fatalf("store is not false: %s", r.RawJSON())
	}
	if !res.Verified || res.Receipt == nil || res.Receipt.Receipt.Stream {
		t.Fatalf("non-stream answer not verified: %+v", res)
	}
	if u := res.Receipt.Receipt.Usage; u.PromptTokens != r.Usage.InputTokens || u.CompletionTokens != r.Usage.OutputTokens || u.TotalTokens != r.Usage.TotalTokens {
		t.Fatalf("receipt usage %+v, response usage %+v", u, r.Usage)
	}

	res = client.Result{}
	st := c.Responses.NewStreaming(client.WithResult(ctx, &res), responseParams("Tell me about lighthouses."))
	var text strings.Builder
	var types []string
	var final responses.Response
	lastSeq := int64(-1)
	for st.Next() {
		ev := st.Current()
		types = append(types, ev.Type)
		if ev.SequenceNumber != lastSeq+1 {
			t.Fatalf("event %s: sequence_number %d after %d", ev.Type, ev.SequenceNumber, lastSeq)
		}
		lastSeq = ev.SequenceNumber
		switch e := ev.AsAny().(type) {
		case responses.ResponseTextDeltaEvent:
			text.WriteString(e.Delta)
		case responses.ResponseCompletedEvent:
			final = e.Response
		case responses.ResponseIncompleteEvent:
			final = e.Response
		}
	}
	if err := st.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added", "response.output_text.delta"}
	for i, w := range want {
		if i >= len(types) || types[i] != w {
			t.Fatalf("events %v, want them to start with %v", types, want)
		}
	}
	n := len(types)
	tail := []string{"response.output_text.done", "response.content_part.done", "response.output_item.done"}
	if n < 9 || types[n-1] != attest.ResponsesReceiptEvent || (types[n-2] != "response.completed" && types[n-2] != "response.incomplete") ||
		types[n-5] != tail[0] || types[n-4] != tail[1] || types[n-3] != tail[2] {
		t.Fatalf("events end %v", types)
	}
	if text.Len() == 0 || final.OutputText() != text.String() {
		t.Fatalf("streamed text %q, final output_text %q", text.String(), final.OutputText())
	}
	if final.Usage.OutputTokens <= 0 || final.Usage.InputTokens <= 0 {
		t.Fatalf("final usage %+v", final.Usage)
	}
	if !res.Verified || !res.Receipt.Receipt.Stream || res.Receipt.Receipt.Usage.TotalTokens != final.Usage.TotalTokens {
		t.Fatalf("stream not verified with its usage: %+v", res)
	}
	// The same input gives the same text streamed and not (the builtin
	// engine is deterministic for one request body apart from "stream").
	if r.OutputText() != text.String() {
		t.Fatalf("non-stream %q, stream %q", r.OutputText(), text.String())
	}
}

// One byte changed in a streamed delta (or in a non-stream answer) fails
// the SDK middleware's verification.
func TestSDKResponsesTampered(t *testing.T) {
	s := stacktest.Start(t)
	flip := func(_ string, b []byte) []byte {
		for _, key := range [][]byte{[]byte(`"delta":"`), []byte(`"text":"`)} {
			for off := 0; ; {
				i := bytes.Index(b[off:], key)
				if i < 0 {
					break
				}
				j := off + i + len(key)
				if c := b[j]; c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
					b = bytes.Clone(b)
					b[j] ^= 0x20
					return b
				}
				off = j
			}
		}
		return b
	}
	proxy := tamperingProxyFor(t, s.URL, "/responses", flip)
	c, _ := verifyingClient(t, proxy.URL, client.Config{})
	ctx := context.Background()
	_, err := c.Responses.New(ctx, responseParams("Tell me about bread."))
	if !errors.Is(err, client.ErrVerification) {
		t.Fatalf("tampered answer: err = %v, want ErrVerification", err)
	}
	st := c.Responses.NewStreaming(ctx, responseParams("Tell me about bread."))
	for st.Next() {
	}
	if !errors.Is(st.Err(), client.ErrVerification) {
		t.Fatalf("tampered stream: err = %v, want ErrVerification", st.Err())
	}
}

// The gateway is stateless: previous_response_id is a 400 and GET
// /v1/responses/{id} a 404, both saying how to send the conversation.
func TestResponsesStateless(t *testing.T) {
	s := stacktest.Start(t)
	c := openai.NewClient(option.WithBaseURL(s.URL+"/v1"), option.WithAPIKey(stacktest.APIKey), option.WithMaxRetries(0))
	ctx := context.Background()
	p := responseParams("Remember my name is Ada.")
	p.PreviousResponseID = openai.String("resp_123")
	_, err := c.Responses.New(ctx, p)
	e := apiError(t, err)
	if e.StatusCode != 400 || e.Param != "previous_response_id" || e.Code != "stateless" || !strings.Contains(e.Message, "send the whole conversation in 'input'") {
		t.Fatalf("previous_response_id: %d %s %s %q", e.StatusCode, e.Param, e.Code, e.Message)
	}
	_, err = c.Responses.Get(ctx, "resp_123", responses.ResponseGetParams{})
	e = apiError(t, err)
	if e.StatusCode != 404 || !strings.Contains(e.Message, "stateless") {
		t.Fatalf("GET: %d %q", e.StatusCode, e.Message)
	}
	// A conversation sent as input items works.
	p = responses.ResponseNewParams{Model: model, MaxOutputTokens: openai.Int(8), Input: responses.ResponseNewParamsInputUnion{
		OfInputItemList: responses.ResponseInputParam{
			responses.ResponseInputItemParamOfMessage("My name is Ada.", responses.EasyInputMessageRoleUser),
			responses.ResponseInputItemParamOfMessage("Hello Ada.", responses.EasyInputMessageRoleAssistant),
			responses.ResponseInputItemParamOfMessage("What is my name?", responses.EasyInputMessageRoleUser),
		},
	}}
	r, err := c.Responses.New(ctx, p)
	if err != nil || r.OutputText() == "" {
		t.Fatalf("conversation in input: %v", err)
	}
}

// Answers saved from the API verify with `teegate verify response`, the
// stream too; one flipped byte in a streamed delta fails.
func TestResponsesVerifyCLI(t *testing.T) {
	s := stacktest.Start(t)
	bin := teegateBinary(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, stream := range []bool{false, true} {
		body := `{"model":"teegate-builtin","input":"Tell me about rivers.","max_output_tokens":12` +
			map[bool]string{false: "}", true: `,"stream":true}`}[stream]
		resp, out := post(t, s.URL+"/v1/responses", stacktest.APIKey, body, "Teegate-Inline-Evidence", "1")
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, out)
		}
		args := []string{"verify", "response", "--allow-simulated", "--request", write("req", []byte(body)), "--response", write("resp", out)}
		if !stream {
			// A non-stream answer names its bundle; the bundle is
			// fetched (it never rides in a header).
			_, ev := get(t, s.URL+"/v1/attestation/evidence/"+resp.Header.Get("Teegate-Evidence-Id"))
			args = append(args, "--receipt", write("rcpt", []byte(resp.Header.Get("Teegate-Receipt"))), "--evidence", write("ev", ev))
		} else {
			args = append(args, "--stream")
			if !strings.HasSuffix(string(out), "}\n\n") || strings.Contains(string(out), "[DONE]") ||
				!strings.Contains(string(out), "\nevent: keepalive\ndata: {\"type\":\"keepalive\",\"sequence_number\":") {
				t.Fatalf("stream framing:\n%s", out)
			}
		}
		if o, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("stream=%v: genuine answer failed: %v\n%s", stream, err, o)
		}
		key := []byte(`"delta":"`)
		if !stream {
			key = []byte(`"text":"`)
		}
		i := bytes.Index(out, key)
		if i < 0 {
			t.Fatalf("no %s in %s", key, out)
		}
		bad := bytes.Clone(out)
		bad[i+len(key)] ^= 0x01
		args[6] = write("resp", bad)
		o, err := exec.Command(bin, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(o), "response") {
			t.Fatalf("stream=%v: flipped byte verified (or wrong message): %v\n%s", stream, err, o)
		}
	}
}

// Request validation happens before a worker is asked, with OpenAI-shaped
// errors; the worker refuses what only it can judge.
func TestResponsesValidation(t *testing.T) {
	s := stacktest.Start(t)
	for _, tc := range []struct {
		body, param string
		status      int
	}{
		{`{"model":"teegate-builtin"}`, "input", 400},
		{`{"model":"teegate-builtin","input":7}`, "input", 400},
		{`{"model":"teegate-builtin","input":"x","max_output_tokens":0}`, "max_output_tokens", 400},
		{`{"model":"teegate-builtin","input":"x","temperature":3}`, "temperature", 400},
		{`{"model":"teegate-builtin","input":"x","conversation":"conv_1"}`, "conversation", 400},
		{`{"model":"teegate-builtin","input":[{"type":"item_reference","id":"msg_1"}]}`, "input[0].type", 400},
		{`{"model":"teegate-builtin","input":[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}]}`, "input[0].content[0].type", 400},
		{`{"model":"teegate-builtin","input":[{"role":"wizard","content":"x"}]}`, "input[0].role", 400},
		{`{"model":"no-such-model","input":"x"}`, "model", 404},
	} {
		resp, out := post(t, s.URL+"/v1/responses", stacktest.APIKey, tc.body)
		var e struct {
			Error struct {
				Param *string `json:"param"`
				Type  string  `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal(out, &e); err != nil || resp.StatusCode != tc.status || e.Error.Param == nil || *e.Error.Param != tc.param {
			t.Errorf("%s: %d %s", tc.body, resp.StatusCode, out)
		}
	}
	resp, _ := mustSend(t, http.MethodDelete, s.URL+"/v1/responses/resp_1", stacktest.APIKey, "")
	if resp.StatusCode != 404 {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
}

// failingEvents is a Responses engine whose streams send two named events
// and then fail, or send an event whose name would break the framing.
type failingEvents struct{ badName bool }

func (f *failingEvents) Models(context.Context) ([]engine.Model, error) {
	return []engine.Model{{ID: "events", Object: "model", OwnedBy: "test"}}, nil
}

func (f *failingEvents) Do(_ context.Context, call engine.Call) (*engine.Result, error) {
	return &engine.Result{Stream: &failingStream{bad: f.badName}}, nil
}

type failingStream struct {
	n   int
	bad bool
}

func (s *failingStream) Next(context.Context) ([]byte, error) {
	s.n++
	if s.n > 2 {
		return nil, engine.Errorf(502, "server_error", "", "engine_stream_truncated", "inference engine ended the stream early")
	}
	return []byte(`{"type":"response.created","sequence_number":` + strconv.Itoa(s.n-1) + `}`), nil
}

func (s *failingStream) Event() string {
	if s.bad && s.n == 2 {
		return "x\ndata: {}"
	}
	return "response.created"
}

func (s *failingStream) Close() error { return nil }

// A Responses stream that fails after it started ends with an "error"
// event carrying the next sequence number, which the SDKs raise; an engine
// event name that could break the framing is refused the same way.
func TestResponsesStreamErrorEvent(t *testing.T) {
	for _, bad := range []bool{false, true} {
		s := stacktest.Start(t, stacktest.WithEngines(&failingEvents{badName: bad}))
		resp, out := post(t, s.URL+"/v1/responses", stacktest.APIKey, `{"model":"events","input":"x","stream":true}`)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, out)
		}
		events := strings.Split(strings.TrimSuffix(string(out), "\n\n"), "\n\n")
		last := events[len(events)-1]
		wantSeq := map[bool]string{false: "2", true: "1"}[bad]
		if !strings.HasPrefix(last, "event: error\ndata: {\"type\":\"error\",\"sequence_number\":"+wantSeq+",") || strings.Contains(string(out), "[DONE]") {
			t.Fatalf("bad=%v: stream\n%s", bad, out)
		}
		c := openai.NewClient(option.WithBaseURL(s.URL+"/v1"), option.WithAPIKey(stacktest.APIKey), option.WithMaxRetries(0))
		st := c.Responses.NewStreaming(context.Background(), responses.ResponseNewParams{Model: "events", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}})
		var types []string
		for st.Next() {
			types = append(types, st.Current().Type)
		}
		if len(types) == 0 || types[len(types)-1] != "error" {
			t.Fatalf("bad=%v: SDK saw %v, err %v", bad, types, st.Err())
		}
	}
}

// Fresh mode and inline evidence work for Responses answers as for chat:
// the middleware sends a nonce and requires evidence covering it.
func TestSDKResponsesFreshMode(t *testing.T) {
	s := stacktest.Start(t)
	c, _ := verifyingClient(t, s.URL, client.Config{RequireNonce: true, InlineEvidence: true})
	ctx := context.Background()
	var res client.Result
	if _, err := c.Responses.New(client.WithResult(ctx, &res), responseParams("Tell me about tides.")); err != nil || !res.Verified || res.FreshEvidenceID == "" {
		t.Fatalf("non-stream: %v %+v", err, res)
	}
	res = client.Result{}
	st := c.Responses.NewStreaming(client.WithResult(ctx, &res), responseParams("Tell me about tides."))
	for st.Next() {
	}
	if st.Err() != nil || !res.Verified || res.FreshEvidenceID == "" {
		t.Fatalf("stream: %v %+v", st.Err(), res)
	}
}
