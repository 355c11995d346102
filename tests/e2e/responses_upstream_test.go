package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/client"
	"github.com/teegate/teegate/internal/enginetest"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
	oaengine "github.com/teegate/teegate/worker/engine/openai"
)

const (
	upstreamDir   = "../../worker/engine/openai/testdata/openai-responses"
	upstreamModel = "gpt-4.1-mini-2025-04-14"
)

func upstreamStack(t *testing.T, serves bool, mode oaengine.ResponsesMode) (*stack.Stack, *enginetest.Upstream) {
	t.Helper()
	up := enginetest.NewUpstream(t, upstreamDir, upstreamModel, serves)
	e, err := oaengine.New(oaengine.Config{BaseURL: up.URL, Responses: mode})
	if err != nil {
		t.Fatal(err)
	}
	return stacktest.Start(t, stacktest.WithEngines(e)), up
}

func readRequest(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(upstreamDir + "/" + name + ".request.json")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The openai engine passes /v1/responses through, byte for byte, to an
// upstream that serves it: the client gets the transcript's body exactly
// (a stream: exactly, then the receipt event), and the receipt verifies.
func TestResponsesPassthroughByteForByte(t *testing.T) {
	for _, mode := range []oaengine.ResponsesMode{oaengine.ResponsesPassthrough, oaengine.ResponsesAuto} {
		t.Run(string(mode), func(t *testing.T) {
			s, up := upstreamStack(t, true, mode)
			for _, name := range []string{"responses-nonstream", "responses-stream"} {
				body := readRequest(t, name)
				resp, out := post(t, s.URL+"/v1/responses", stacktest.APIKey, body)
				if resp.StatusCode != 200 {
					t.Fatalf("%s: %d %s", name, resp.StatusCode, out)
				}
				want := enginetest.LoadTranscript(t, upstreamDir, name).Body
				got := out
				if strings.HasSuffix(name, "stream") && !strings.HasSuffix(name, "nonstream") {
					i := bytes.LastIndex(out, []byte("event: "+attest.ResponsesReceiptEvent+"\n"))
					if i < 0 {
						t.Fatalf("no receipt event:\n%s", out)
					}
					got = out[:i]
					res, err := attest.DigestSSE(bytes.NewReader(out))
					if err != nil || res.Receipt == nil {
						t.Fatalf("digest: %v", err)
					}
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s: not byte for byte\n got %q\nwant %q", name, got, want)
				}
				if !strings.HasSuffix(name, "nonstream") {
					continue
				}
				if resp.Header.Get("Teegate-Receipt") == "" {
					t.Fatalf("%s: no receipt", name)
				}
			}
			for _, p := range up.Paths() {
				if p != "/v1/responses" {
					t.Fatalf("upstream got %s", p)
				}
			}
			// The SDK middleware verifies the passed-through answers.
			c, _ := verifyingClient(t, s.URL, client.Config{})
			var res client.Result
			r, err := c.Responses.New(client.WithResult(context.Background(), &res), upstreamParams())
			if err != nil || !res.Verified || r.OutputText() != "Lighthouses guide ships at night." {
				t.Fatalf("SDK: %v %+v", err, res)
			}
		})
	}
}

func upstreamParams() responses.ResponseNewParams {
	return responses.ResponseNewParams{
		Model:           upstreamModel,
		Instructions:    openai.String("Answer in one sentence."),
		MaxOutputTokens: openai.Int(32),
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			responses.ResponseInputItemParamOfMessage("What do lighthouses do?", responses.EasyInputMessageRoleUser),
		}},
	}
}

// sdkView is what an application reads from a response through the SDK.
type sdkView struct {
	Text, Status, Model   string
	Input, Output, Total  int64
	Items                 []string
	Events, Deltas        []string
	StreamText, FinalText string
}

func viewOf(t *testing.T, s *stack.Stack) sdkView {
	t.Helper()
	c, _ := verifyingClient(t, s.URL, client.Config{})
	ctx := context.Background()
	var v sdkView
	var res client.Result
	r, err := c.Responses.New(client.WithResult(ctx, &res), upstreamParams())
	if err != nil || !res.Verified {
		t.Fatalf("New: %v %+v", err, res)
	}
	v.Text, v.Status, v.Model = r.OutputText(), string(r.Status), r.Model
	v.Input, v.Output, v.Total = r.Usage.InputTokens, r.Usage.OutputTokens, r.Usage.TotalTokens
	for _, it := range r.Output {
		v.Items = append(v.Items, it.Type+"/"+string(it.Role)+"/"+string(it.Status))
	}
	res = client.Result{}
	st := c.Responses.NewStreaming(client.WithResult(ctx, &res), upstreamParams())
	for st.Next() {
		ev := st.Current()
		v.Events = append(v.Events, ev.Type)
		switch e := ev.AsAny().(type) {
		case responses.ResponseTextDeltaEvent:
			v.Deltas = append(v.Deltas, e.Delta)
			v.StreamText += e.Delta
		case responses.ResponseCompletedEvent:
			v.FinalText = e.Response.OutputText()
		}
	}
	if err := st.Err(); err != nil || !res.Verified {
		t.Fatalf("stream: %v %+v", err, res)
	}
	return v
}

// Against an upstream without /v1/responses the openai engine translates
// to chat completions, and the SDK sees the same result as from the
// upstream that serves it.
func TestResponsesTranslationMatchesPassthrough(t *testing.T) {
	direct, _ := upstreamStack(t, true, oaengine.ResponsesPassthrough)
	want := viewOf(t, direct)
	if want.Text != "Lighthouses guide ships at night." || want.Total != 21 || want.StreamText != want.Text {
		t.Fatalf("pass-through view: %+v", want)
	}
	for _, mode := range []oaengine.ResponsesMode{oaengine.ResponsesTranslate, oaengine.ResponsesAuto} {
		t.Run(string(mode), func(t *testing.T) {
			s, up := upstreamStack(t, false, mode)
			got := viewOf(t, s)
			// The receipt event is the SDK-visible extra of both; it is last.
			if !reflect.DeepEqual(got, want) {
				a, _ := json.MarshalIndent(got, "", " ")
				b, _ := json.MarshalIndent(want, "", " ")
				t.Fatalf("translated view\n%s\npass-through view\n%s", a, b)
			}
			chat := 0
			for _, p := range up.Paths() {
				if p == "/v1/chat/completions" {
					chat++
				}
			}
			if chat != 2 {
				t.Fatalf("upstream paths %v", up.Paths())
			}
		})
	}
}
