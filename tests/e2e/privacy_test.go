package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/gateway/audit"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker/engine/builtin"
	upstream "github.com/teegate/teegate/worker/engine/openai"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// privCanary starts every word planted in request content by the privacy
// test. It is lower-case letters only, so no encoding on the way (JSON,
// slog, headers) changes it, and it occurs nowhere in the builtin corpus.
const privCanary = "qzvcanary"

// privWindow is the length of the completion-text fragments searched for:
// long enough that English text from the builtin corpus does not match log
// vocabulary by chance, short enough to catch a truncated leak.
const privWindow = 12

// Models of the privacy stack besides the default builtin one.
const (
	privSlowModel  = "teegate-slow"   // builtin with a per-token delay: disconnects land mid-stream
	privEchoModel  = "upstream-echo"  // OpenAI-compatible server whose errors echo the prompt
	privTruncModel = "upstream-trunc" // OpenAI-compatible server whose streams break before [DONE]
	privUpstreamOK = "The upstream keeper trimmed the wick and logged the passing ships."
)

// No prompt or completion text appears in any log line at any level, in any
// JetStream key-value entry, or on disk in the data directory; the gateway's
// own error bodies never echo request content.
//
// Echo policy: an error body may contain the client's own prompt only when
// an inference engine put it in its error message (privEchoModel below,
// relayed by worker/engine/openai.NormalizeError). That body goes back to the
// client that sent the prompt, over the same channel as a completion would;
// the gateway relays it without reading it, and nothing logs or stores it.
// Everything else (gateway validation, routing, deadlines, builtin-engine
// rejections, worker errors, upstream fields other than the message such as
// FastAPI's "input") must not echo content.
func TestPrivacyNoContentInLogsOrState(t *testing.T) {
	logs := &privLog{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	withLogs := func(c *stack.Config) {
		c.Logger = log
		c.Gateway.Logger = log.With("component", "gateway")
		c.Worker.Logger = log.With("component", "worker")
	}

	up := httptest.NewServer(http.HandlerFunc(privUpstream))
	t.Cleanup(up.Close)
	eng, err := upstream.New(upstream.Config{BaseURL: up.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })

	dirA, dirB := t.TempDir(), t.TempDir()
	a := stacktest.Start(t, withLogs, stacktest.WithEngines(
		stacktest.Builtin(t, builtin.Config{}),
		stacktest.Builtin(t, builtin.Config{ModelID: privSlowModel, Latency: builtin.Latency{PerToken: 5 * time.Millisecond}}),
		eng,
	), func(c *stack.Config) {
		c.DataDir = dirA
		// Counted limits: their counters in NATS are state to check too.
		c.Gateway.DefaultRPM = 1 << 30
	})
	// A gateway deadline shorter than the engine's first token: 504s.
	b := stacktest.Start(t, withLogs, stacktest.WithEngines(
		stacktest.Builtin(t, builtin.Config{Latency: builtin.Latency{TTFT: time.Hour}}),
	), func(c *stack.Config) {
		c.DataDir = dirB
		c.Gateway.RequestTimeout = 300 * time.Millisecond
	})

	p := &privacyProbe{}
	c := p.canary
	msgs := func(words ...string) string {
		var parts []string
		for i, w := range words {
			role := "user"
			if i == 0 && len(words) > 1 {
				role = "system"
			}
			parts = append(parts, fmt.Sprintf(`{"role":%q,"content":"Tell me about %s and lighthouses."}`, role, w))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	chat, comp, emb, resp := "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"

	cases := []privCase{
		// Successful paths: the builtin engine.
		{name: "chat", path: chat, want: 200, receipt: true,
			body: `{"model":"teegate-builtin","messages":` + msgs(c(), c()) + `,"max_tokens":24,"seed":7}`},
		{name: "chat n>1 stop", path: chat, want: 200, receipt: true,
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `,"max_tokens":24,"n":3,"stop":["` + c() + `","\n\n"],"seed":8}`},
		{name: "chat stream", path: chat, want: 200, stream: true, receipt: true,
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `,"max_tokens":24,"n":2,"stream":true,"stream_options":{"include_usage":true},"stop":"` + c() + `"}`},
		{name: "completions", path: comp, want: 200, receipt: true,
			body: `{"model":"teegate-builtin","prompt":["Once upon a ` + c() + `","The ` + c() + ` said"],"max_tokens":16,"n":2}`},
		{name: "completions stream", path: comp, want: 200, stream: true, receipt: true,
			body: `{"model":"teegate-builtin","prompt":"Once upon a ` + c() + `","max_tokens":16,"stream":true}`},
		// echo returns the prompt inside the completion: the client's own
		// text, which must still stay out of logs and state.
		{name: "completions echo", path: comp, want: 200, receipt: true,
			body: `{"model":"teegate-builtin","prompt":"Once upon a ` + c() + `","max_tokens":8,"echo":true}`},
		{name: "completions echo stream", path: comp, want: 200, stream: true, receipt: true,
			body: `{"model":"teegate-builtin","prompt":"Once upon a ` + c() + `","max_tokens":8,"echo":true,"stream":true}`},
		{name: "embeddings", path: emb, want: 200, receipt: true,
			body: `{"model":"teegate-builtin","input":["a ` + c() + ` garden","a ` + c() + ` bakery"]}`},
		{name: "fresh mode", path: chat, want: 200, receipt: true, hdr: map[string]string{gateway.HeaderNonce: "privacy-nonce-1"},
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `,"max_tokens":12}`},
		{name: "fresh mode stream", path: chat, want: 200, stream: true, receipt: true, hdr: map[string]string{gateway.HeaderNonce: "privacy-nonce-2"},
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `,"max_tokens":12,"stream":true}`},
		{name: "inline evidence", path: chat, want: 200, receipt: true, hdr: map[string]string{gateway.HeaderInline: "1"},
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `,"max_tokens":12}`},
		{name: "inline evidence stream", path: chat, want: 200, stream: true, receipt: true, hdr: map[string]string{gateway.HeaderInline: "1"},
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `,"max_tokens":12,"stream":true}`},

		// The gateway's own refusals.
		{name: "malformed JSON cut", path: chat, want: 400,
			body: `{"model":"teegate-builtin","messages":[{"role":"user","content":"` + c()},
		{name: "malformed JSON trailing", path: chat, want: 400,
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `} ` + c()},
		{name: "malformed JSON bad token", path: chat, want: 400,
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `,` + c() + `}`},
		{name: "malformed JSON bad escape", path: comp, want: 400,
			body: `{"model":"teegate-builtin","prompt":"` + c() + `\q"}`},
		{name: "not an object", path: chat, want: 400, body: c() + ` is not JSON`},
		{name: "temperature as a string", path: chat, want: 400,
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `,"temperature":"` + c() + `"}`},
		{name: "messages as a string", path: chat, want: 400,
			body: `{"model":"teegate-builtin","messages":"` + c() + `"}`},
		{name: "stop as an object", path: chat, want: 400,
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `,"stop":{"` + c() + `":"` + c() + `"}}`},
		{name: "role is content", path: chat, want: 400,
			body: `{"model":"teegate-builtin","messages":[{"role":"` + c() + `","content":"` + c() + `"}]}`},
		{name: "unknown model", path: chat, want: 404,
			body: `{"model":"no-such-model","messages":` + msgs(c()) + `}`},
		{name: "unknown model stream", path: chat, want: 404,
			body: `{"model":"no-such-model","messages":` + msgs(c()) + `,"stream":true}`},

		// The builtin engine's refusals (after the gateway let them through).
		{name: "engine rejects tools", path: chat, want: 400,
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `,"tools":[{"type":"function","function":{"name":"lookup","description":"` + c() + `"}}]}`},
		{name: "engine rejects tools stream", path: chat, want: 400,
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `,"stream":true,"tools":[{"type":"function","function":{"name":"lookup","description":"` + c() + `"}}]}`},
		{name: "engine rejects content part", path: chat, want: 400,
			body: `{"model":"teegate-builtin","messages":[{"role":"user","content":[{"type":"` + c() + `","text":"` + c() + `"}]}]}`},
		{name: "engine rejects prompt type", path: comp, want: 400,
			body: `{"model":"teegate-builtin","prompt":{"` + c() + `":"` + c() + `"}}`},

		// An OpenAI-compatible engine.
		{name: "upstream echoes prompt", path: chat, want: 400, echoOK: true,
			body: `{"model":"upstream-echo","messages":` + msgs(c()) + `}`},
		{name: "upstream echoes prompt as text", path: comp, want: 400, echoOK: true,
			body: `{"model":"upstream-echo","prompt":"` + c() + `"}`},
		// FastAPI's validation items carry the input; only loc and msg pass.
		{name: "upstream validation input", path: chat, want: 422,
			body: `{"model":"upstream-echo","messages":` + msgs(c()) + `,"stream":true}`},
		{name: "upstream ok", path: chat, want: 200, receipt: true,
			body: `{"model":"upstream-trunc","messages":` + msgs(c()) + `}`},
		{name: "upstream truncates stream", path: chat, want: 200, stream: true, wantStreamErr: true,
			body: `{"model":"upstream-trunc","messages":` + msgs(c()) + `,"stream":true}`},

		// The Responses API: the builtin engine, the openai engine
		// translating to chat (privUpstream has no /v1/responses), and the
		// stateless refusals.
		{name: "responses", path: resp, want: 200, receipt: true,
			body: `{"model":"teegate-builtin","instructions":"Speak of ` + c() + `.","input":[{"role":"user","content":[{"type":"input_text","text":"Tell me about ` + c() + `."}]},` +
				`{"role":"assistant","content":[{"type":"output_text","text":"The ` + c() + ` glows."}]},{"role":"user","content":"And ` + c() + `?"}],"max_output_tokens":24,"metadata":{"k":"` + c() + `"}}`},
		{name: "responses stream", path: resp, want: 200, stream: true, receipt: true,
			body: `{"model":"teegate-builtin","instructions":"Speak of ` + c() + `.","input":"Tell me about ` + c() + `.","max_output_tokens":24,"stream":true}`},
		{name: "responses inline evidence stream", path: resp, want: 200, stream: true, receipt: true, hdr: map[string]string{gateway.HeaderInline: "1"},
			body: `{"model":"teegate-builtin","input":"Tell me about ` + c() + `.","max_output_tokens":12,"stream":true}`},
		{name: "responses previous_response_id", path: resp, want: 400,
			body: `{"model":"teegate-builtin","input":"Tell me about ` + c() + `.","previous_response_id":"resp_1"}`},
		{name: "responses item_reference", path: resp, want: 400,
			body: `{"model":"teegate-builtin","input":[{"role":"user","content":"` + c() + `"},{"type":"item_reference","id":"msg_1"}]}`},
		{name: "responses engine rejects image", path: resp, want: 400,
			body: `{"model":"teegate-builtin","input":[{"role":"user","content":[{"type":"input_text","text":"` + c() + `"},{"type":"input_image","image_url":"https://x/` + c() + `.png"}]}]}`},
		{name: "responses input as a number", path: resp, want: 400, body: `{"model":"teegate-builtin","input":7,"instructions":"` + c() + `"}`},
		{name: "responses upstream translated", path: resp, want: 200, receipt: true,
			body: `{"model":"upstream-trunc","input":"Tell me about ` + c() + `."}`},
		{name: "responses upstream truncates stream", path: resp, want: 200, stream: true, wantStreamErr: true,
			body: `{"model":"upstream-trunc","input":"Tell me about ` + c() + `.","stream":true}`},
		{name: "responses upstream echoes prompt", path: resp, want: 400, echoOK: true,
			body: `{"model":"upstream-echo","input":"Tell me about ` + c() + `."}`},
		{name: "responses deadline stream", onB: true, path: resp, want: 200, stream: true, wantStreamErr: true,
			body: `{"model":"teegate-builtin","input":"Tell me about ` + c() + `.","stream":true}`},

		// Deadlines (stack b).
		{name: "deadline 504", onB: true, path: chat, want: 504,
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `}`},
		{name: "deadline stream", onB: true, path: chat, want: 200, stream: true, wantStreamErr: true,
			body: `{"model":"teegate-builtin","messages":` + msgs(c()) + `,"stream":true}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := a
			if tc.onB {
				s = b
			}
			p.run(t, s, tc)
		})
	}
	t.Run("body too large", func(t *testing.T) { p.tooLarge(t, a) })
	t.Run("client disconnects mid-stream", func(t *testing.T) { p.disconnect(t, a, logs) })

	// Every successful request's receipt is stored off the request path;
	// wait for all of them so the state checked below is complete.
	receipts, err := a.JS.KeyValue(context.Background(), gateway.ReceiptsBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range p.receiptIDs {
		stacktest.Eventually(t, 20*time.Second, func() bool {
			_, err := receipts.Get(context.Background(), id)
			return err == nil
		}, "receipt "+id)
	}
	if len(p.texts) < 10 {
		t.Fatalf("collected only %d completion texts: the paths did not produce content", len(p.texts))
	}

	// Key-value state, read through JetStream while the stacks run.
	kvA, kvB := p.kvValues(t, a), p.kvValues(t, b)
	p.assertClean(t, "JetStream KV (stack a)", kvA)
	p.assertClean(t, "JetStream KV (stack b)", kvB)
	// Every audit record the stacks wrote (receipts, refusals, admissions).
	for name, st := range map[string]*stack.Stack{"a": a, "b": b} {
		p.assertClean(t, "audit log (stack "+name+")", privAudit(t, st))
	}

	// Closing flushes every log line (streams and workers log after the
	// client has its last byte) and the file store.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a.Close(ctx)
	b.Close(ctx)

	out := logs.String()
	for _, want := range []string{`"component":"gateway"`, `"component":"worker"`, `"msg":"request served"`, `"msg":"stream ended early"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("logs lack %s: the logger wiring did not capture both services", want)
		}
	}
	p.assertClean(t, "logs", privLogStrings(t, out))
	if strings.Contains(out, stacktest.APIKey) {
		t.Fatal("an API key secret appears in the logs")
	}
	p.assertErrorBodies(t)
	p.assertClean(t, "data directory (stack a)", privFiles(t, dirA))
	p.assertClean(t, "data directory (stack b)", privFiles(t, dirB))
	t.Logf("checked %d log bytes, %d completion texts, %d error bodies, %d KV values",
		len(out), len(p.texts), len(p.errBodies), len(kvA)+len(kvB))
}

type privCase struct {
	name string
	onB  bool
	path string
	body string
	hdr  map[string]string
	want int
	// stream: the response is SSE; wantStreamErr: it ends in an error event.
	stream, wantStreamErr bool
	// receipt: a receipt must get stored under the request id.
	receipt bool
	// echoOK: an engine may echo the prompt in its error message.
	echoOK bool
}

// privacyProbe sends requests and keeps what the checks need: every
// completion text a client received and every error body.
type privacyProbe struct {
	n          int
	texts      []string
	errBodies  []privErrBody
	receiptIDs []string
}

type privErrBody struct {
	name   string
	body   string
	echoOK bool
}

// canary returns a fresh word for request content.
func (p *privacyProbe) canary() string {
	p.n++
	return fmt.Sprintf("%s%03dx", privCanary, p.n)
}

func (p *privacyProbe) run(t *testing.T, s *stack.Stack, tc privCase) {
	req, _ := http.NewRequest("POST", s.URL+tc.path, strings.NewReader(tc.body))
	req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range tc.hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != tc.want {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, body)
	}
	if resp.StatusCode >= 400 {
		p.errBodies = append(p.errBodies, privErrBody{tc.name, string(body), tc.echoOK})
		if tc.echoOK && !strings.Contains(string(body), privCanary) {
			t.Logf("note: the engine's echo did not reach the client: %s", body)
		}
		return
	}
	if !tc.stream {
		p.collect(t, body)
	} else {
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			t.Fatalf("content type %q", ct)
		}
		failed := false
		for _, payload := range privSSE(string(body)) {
			if payload == "[DONE]" {
				continue
			}
			if strings.HasPrefix(payload, `{"error"`) || strings.HasPrefix(payload, `{"type":"error"`) {
				failed = true
				p.errBodies = append(p.errBodies, privErrBody{tc.name, payload, tc.echoOK})
				continue
			}
			p.collect(t, []byte(payload))
		}
		if failed != tc.wantStreamErr {
			t.Fatalf("stream error event = %v, want %v: %s", failed, tc.wantStreamErr, body)
		}
	}
	if tc.receipt {
		p.receiptIDs = append(p.receiptIDs, resp.Header.Get("x-request-id"))
	}
}

// collect keeps the text of every choice of one response or chunk.
func (p *privacyProbe) collect(t *testing.T, payload []byte) {
	var r struct {
		Choices []struct {
			Text    string `json:"text"`
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			Delta struct {
				Content string `json:"content"`
			} `json:"delta"`
		} `json:"choices"`
		Data []json.RawMessage `json:"data"`
		// Responses API: a text delta, a done text, the output items of a
		// response (or of the response inside an event).
		Delta string          `json:"delta"`
		Text  json.RawMessage `json:"text"` // a done text; the response object's text config

		Output   []privOutput `json:"output"`
		Response *struct {
			Output []privOutput `json:"output"`
		} `json:"response"`
	}
	if err := json.Unmarshal(payload, &r); err != nil {
		t.Fatalf("response is not JSON: %v: %.200s", err, payload)
	}
	for _, c := range r.Choices {
		for _, s := range []string{c.Text, c.Message.Content, c.Delta.Content} {
			if strings.TrimSpace(s) != "" {
				p.texts = append(p.texts, s)
			}
		}
	}
	out := r.Output
	if r.Response != nil {
		out = append(out, r.Response.Output...)
	}
	texts := []string{r.Delta}
	var done string
	if json.Unmarshal(r.Text, &done) == nil {
		texts = append(texts, done)
	}
	for _, o := range out {
		for _, c := range o.Content {
			texts = append(texts, c.Text)
		}
	}
	for _, s := range texts {
		if strings.TrimSpace(s) != "" {
			p.texts = append(p.texts, s)
		}
	}
}

type privOutput struct {
	Content []struct {
		Text string `json:"text"`
	} `json:"content"`
}

// tooLarge announces an oversized body whose start holds a canary; the
// server refuses it from Content-Length (413) before reading it. A raw
// connection avoids racing the server's close while still writing.
func (p *privacyProbe) tooLarge(t *testing.T, s *stack.Stack) {
	addr := strings.TrimPrefix(s.URL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := `{"model":"teegate-builtin","messages":[{"role":"user","content":"` + p.canary()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		addr, stacktest.APIKey, 64<<20, start)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	p.errBodies = append(p.errBodies, privErrBody{"body too large", string(body), false})
}

// disconnect reads a few chunks of a slow stream, hangs up, and waits for
// the worker to log the end of the generation so that line is checked too.
func (p *privacyProbe) disconnect(t *testing.T, s *stack.Stack, logs *privLog) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := `{"model":"` + privSlowModel + `","messages":[{"role":"user","content":"Tell me about ` + p.canary() + `."}],"max_tokens":4096,"stream":true}`
	req, _ := http.NewRequestWithContext(ctx, "POST", s.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Header.Get("x-request-id")
	r := bufio.NewReader(resp.Body)
	var text strings.Builder
	for events := 0; events < 6; {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		payload, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "data: ")
		if !ok {
			continue
		}
		events++
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(payload), &chunk); err != nil {
			t.Fatalf("chunk %q: %v", payload, err)
		}
		for _, c := range chunk.Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	cancel()
	resp.Body.Close()
	if text.Len() > 0 {
		p.texts = append(p.texts, text.String())
	}
	stacktest.Eventually(t, 60*time.Second, func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, id) && strings.Contains(line, `"stream ended early"`) {
				return true
			}
		}
		return false
	}, "the worker to stop the abandoned stream")
}

// assertClean fails the test with every leak findLeaks reports.
func (p *privacyProbe) assertClean(t *testing.T, where string, haystacks []privHay) {
	t.Helper()
	for _, leak := range p.findLeaks(haystacks) {
		t.Errorf("%s: %s", where, leak)
	}
}

// findLeaks reports each haystack that holds a canary or a fragment of a
// completion text.
func (p *privacyProbe) findLeaks(haystacks []privHay) []string {
	var leaks []string
	frags := privFragments(p.texts)
	for _, h := range haystacks {
		if i := bytes.Index(privASCIILower(h.data), []byte(privCanary)); i >= 0 {
			leaks = append(leaks, fmt.Sprintf("%s holds prompt text (a canary) at byte %d: %q", h.name, i, privAround(h.data, i)))
			continue
		}
		for _, f := range frags {
			if i := bytes.Index(h.data, []byte(f)); i >= 0 {
				leaks = append(leaks, fmt.Sprintf("%s holds completion text %q at byte %d: %q", h.name, f, i, privAround(h.data, i)))
				break
			}
		}
	}
	return leaks
}

// assertErrorBodies: no error body a client got echoes its content, except
// an engine's own message (see the test's doc comment).
func (p *privacyProbe) assertErrorBodies(t *testing.T) {
	t.Helper()
	for _, e := range p.errBodies {
		if !e.echoOK && strings.Contains(strings.ToLower(e.body), privCanary) {
			t.Errorf("%s: the error body echoes request content: %s", e.name, e.body)
		}
	}
}

// privFragments cuts completion texts into overlapping windows of
// privWindow bytes that hold mostly letters (runs of spaces or digits are
// not evidence of a leak).
func privFragments(texts []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range texts {
		for i := 0; i+privWindow <= len(s); i++ {
			w := s[i : i+privWindow]
			letters := 0
			for _, r := range w {
				if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
					letters++
				}
			}
			if letters >= privWindow/2 && !seen[w] && !strings.Contains(strings.ToLower(w), privCanary[:4]) {
				seen[w] = true
				out = append(out, w)
			}
		}
	}
	return out
}

type privHay struct {
	name string
	data []byte
}

// privLogStrings returns the raw log and, for each JSON line, its string
// values and keys decoded (a leak escaped by the JSON encoder is still one).
func privLogStrings(t *testing.T, out string) []privHay {
	hay := []privHay{{"raw log", []byte(out)}}
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("log line %d is not JSON: %v: %q", i+1, err, line)
		}
		var b bytes.Buffer
		privStrings(v, &b, 0)
		hay = append(hay, privHay{fmt.Sprintf("log line %d", i+1), b.Bytes()})
	}
	return hay
}

// privStrings appends every string (and key) in v, plus the decoding of
// strings that are base64, recursively into decoded JSON: evidence and
// receipts carry base64 fields.
func privStrings(v any, b *bytes.Buffer, depth int) {
	switch x := v.(type) {
	case string:
		b.WriteString(x)
		b.WriteByte(0)
		if depth < 4 && len(x) >= 16 {
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
				if d, err := enc.DecodeString(x); err == nil {
					b.Write(d)
					b.WriteByte(0)
					var inner any
					if json.Unmarshal(d, &inner) == nil {
						privStrings(inner, b, depth+1)
					}
					break
				}
			}
		}
	case map[string]any:
		for k, e := range x {
			b.WriteString(k)
			b.WriteByte(0)
			privStrings(e, b, depth)
		}
	case []any:
		for _, e := range x {
			privStrings(e, b, depth)
		}
	}
}

// kvValues reads every revision of every key of every key-value bucket.
func (p *privacyProbe) kvValues(t *testing.T, s *stack.Stack) []privHay {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var hay []privHay
	names := s.JS.KeyValueStoreNames(ctx)
	var buckets []string
	for n := range names.Name() {
		buckets = append(buckets, n)
	}
	if err := names.Error(); err != nil {
		t.Fatalf("listing buckets: %v", err)
	}
	for _, want := range []string{gateway.ReceiptsBucket, "teegate_evidence", "teegate_workers"} {
		if !privHas(buckets, want) {
			t.Fatalf("bucket %s missing from %v", want, buckets)
		}
	}
	for _, bucket := range buckets {
		kv, err := s.JS.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatalf("opening bucket %s: %v", bucket, err)
		}
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatalf("listing keys of %s: %v", bucket, err)
		}
		var keys []string
		for k := range lister.Keys() {
			keys = append(keys, k)
		}
		for _, k := range keys {
			entries, err := kv.History(ctx, k)
			if err != nil {
				t.Fatalf("reading %s/%s: %v", bucket, k, err)
			}
			for _, e := range entries {
				name := fmt.Sprintf("%s/%s rev %d", bucket, k, e.Revision())
				hay = append(hay, privHay{name + " (key)", []byte(k)}, privHay{name, e.Value()})
				var v any
				if json.Unmarshal(e.Value(), &v) == nil {
					var b bytes.Buffer
					privStrings(v, &b, 0)
					hay = append(hay, privHay{name + " (decoded)", b.Bytes()})
				}
			}
		}
	}
	return hay
}

func privHas(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// privFiles reads every file under dir (JetStream's file store and the
// simulated TEE's root).
func privFiles(t *testing.T, dir string) []privHay {
	var hay []privHay
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		hay = append(hay, privHay{path, b})
		return nil
	})
	if err != nil {
		t.Fatalf("reading %s: %v", dir, err)
	}
	if len(hay) == 0 {
		t.Fatalf("no files under %s", dir)
	}
	return hay
}

// privASCIILower lower-cases ASCII letters only, keeping every offset
// (bytes.ToLower rewrites invalid UTF-8 in binary data and shifts them).
func privASCIILower(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return out
}

func privAround(b []byte, i int) string {
	return string(b[max(0, i-60):min(len(b), i+80)])
}

// privSSE returns the data payloads of an SSE body, joining multi-line data.
func privSSE(body string) []string {
	var out []string
	for _, ev := range strings.Split(body, "\n\n") {
		var data []string
		for _, line := range strings.Split(ev, "\n") {
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				data = append(data, d)
			}
		}
		if len(data) > 0 {
			out = append(out, strings.Join(data, "\n"))
		}
	}
	return out
}

// privLog is a concurrency-safe log sink.
type privLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *privLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *privLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// privUpstream is an OpenAI-compatible server on loopback. upstream-echo
// fails every request with a body that echoes the request's text, the way
// engines quote an offending input; upstream-trunc answers non-stream
// requests and breaks its streams after two chunks.
func privUpstream(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/v1/models" {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"list","data":[{"id":%q,"object":"model"},{"id":%q,"object":"model"}]}`, privEchoModel, privTruncModel)
		return
	}
	raw, _ := io.ReadAll(r.Body)
	if r.URL.Path == "/v1/responses" {
		if bytes.Contains(raw, []byte(privEchoModel)) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			echo, _ := json.Marshal("This input is not allowed: " + string(raw))
			fmt.Fprintf(w, `{"error":{"message":%s,"type":"invalid_request_error","param":"input","code":null}}`, echo)
			return
		}
		// A server without the Responses API: the engine translates.
		http.NotFound(w, r)
		return
	}
	var req struct {
		Model    string `json:"model"`
		Stream   bool   `json:"stream"`
		Prompt   any    `json:"prompt"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	_ = json.Unmarshal(raw, &req)
	said := fmt.Sprint(req.Prompt)
	if len(req.Messages) > 0 {
		said = req.Messages[len(req.Messages)-1].Content
	}
	switch {
	case req.Model == privEchoModel && req.Stream:
		// FastAPI validation error: "input" holds the request's own text.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		item, _ := json.Marshal(map[string]any{"loc": []string{"body", "messages", "0"}, "msg": "Input should be shorter", "input": said, "ctx": map[string]string{"said": said}})
		fmt.Fprintf(w, `{"detail":[%s]}`, item)
	case req.Model == privEchoModel && len(req.Messages) > 0:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		msg, _ := json.Marshal("This prompt is not allowed: " + said)
		echo, _ := json.Marshal(string(raw))
		fmt.Fprintf(w, `{"error":{"message":%s,"type":"BadRequestError","param":null,"code":400,"request":%s}}`, msg, echo)
	case req.Model == privEchoModel:
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "cannot complete %s", said)
	case !req.Stream:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"up-1","object":"chat.completion","created":1,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":12,"total_tokens":17}}`, req.Model, privUpstreamOK)
	default:
		w.Header().Set("Content-Type", "text/event-stream")
		for _, part := range []string{"The upstream lantern swung ", "over the harbour wall"} {
			fmt.Fprintf(w, "data: {\"id\":\"up-2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", req.Model, part)
		}
		w.(http.Flusher).Flush()
		// Break the connection mid-stream: no [DONE], no clean end.
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}
}

// The leak checks find what they look for: a canary in any case, a
// completion fragment cut anywhere, text hidden by JSON escaping in a log
// line, and text inside a base64 field of a stored JSON value.
func TestPrivacyCheckerFindsLeaks(t *testing.T) {
	completion := "The keeper climbed the spiral stair at dusk."
	quoted := `a"b"c"d"e"f"g"h"i"j"k"l"m"n`
	p := &privacyProbe{texts: []string{completion, quoted}}
	b64 := base64.StdEncoding.EncodeToString([]byte(`{"note":"climbed the spiral stair"}`))
	logLine, _ := json.Marshal(map[string]string{"msg": "x", "v": quoted})
	tests := []struct {
		name string
		hay  []privHay
		leak bool
	}{
		{"clean", []privHay{{"h", []byte(`{"msg":"request served","status":200}`)}}, false},
		{"canary", []privHay{{"h", []byte("prompt " + privCanary + "001x here")}}, true},
		{"canary upper case", []privHay{{"h", []byte(strings.ToUpper(privCanary) + "001X")}}, true},
		{"completion fragment", []privHay{{"h", []byte("...per climbed th...")}}, true},
		{"short fragment", []privHay{{"h", []byte("the spiral")}}, false},
		{"escaped in a log line", privLogStrings(t, string(logLine)+"\n"), true},
		{"inside base64", func() []privHay {
			var v any
			_ = json.Unmarshal([]byte(`{"blob":"`+b64+`"}`), &v)
			var b bytes.Buffer
			privStrings(v, &b, 0)
			return []privHay{{"h", b.Bytes()}}
		}(), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := len(p.findLeaks(tc.hay)) > 0; got != tc.leak {
				t.Fatalf("leak found = %v, want %v", got, tc.leak)
			}
		})
	}
}

// privAudit returns every record of a stack's audit stream, after its
// writers flushed.
func privAudit(t *testing.T, s *stack.Stack) []privHay {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.FlushAudit(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := s.JS.Stream(ctx, audit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		t.Fatal("the audit log is empty: nothing was checked")
	}
	var hay []privHay
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("reading audit record %d: %v", seq, err)
		}
		hay = append(hay, privHay{fmt.Sprintf("audit record %d", seq), m.Data})
	}
	return hay
}

// Metrics and traces carry counts, ids, models and statuses: never a
// prompt, a completion, or a client-chosen model name.
func TestPrivacyNoContentInMetricsOrSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	reg := prometheus.NewRegistry()
	s := stacktest.Start(t, withMetrics(reg), func(c *stack.Config) { c.Tracer = tp })
	const canary = "obs-canary-5cf1e07d"
	bodies := []string{
		`{"model":"teegate-builtin","messages":[{"role":"user","content":"` + canary + `"}],"max_tokens":6}`,
		`{"model":"teegate-builtin","messages":[{"role":"user","content":"` + canary + `"}],"max_tokens":6,"stream":true}`,
		`{"model":"` + canary + `","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"teegate-builtin","messages":"` + canary + `"}`,
	}
	var answers []string
	for _, b := range bodies {
		_, out := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, b, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		answers = append(answers, string(out))
	}
	_, text := scrape(t, s.URL)
	var spans strings.Builder
	for _, sp := range exp.GetSpans() {
		spans.WriteString(sp.Name + "\n")
		for _, a := range sp.Attributes {
			spans.WriteString(string(a.Key) + "=" + a.Value.Emit() + "\n")
		}
		for _, ev := range sp.Events {
			spans.WriteString(ev.Name + "\n")
		}
		spans.WriteString(sp.Status.Description + "\n")
	}
	if spans.Len() == 0 {
		t.Fatal("no spans recorded")
	}
	for where, got := range map[string]string{"/metrics": text, "spans": spans.String()} {
		if strings.Contains(got, canary) {
			t.Errorf("%s carries the canary", where)
		}
		// A completion's words (the builtin engine's output) neither.
		for _, a := range answers[:1] {
			if i := strings.Index(a, `"content":"`); i >= 0 {
				words := strings.Fields(a[i+11 : min(len(a), i+60)])
				if len(words) > 2 && strings.Contains(got, words[0]+" "+words[1]) {
					t.Errorf("%s carries completion text %q", where, words[0]+" "+words[1])
				}
			}
		}
	}
}
