package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/internal/stacktest"
	upstream "github.com/teegate/teegate/worker/engine/openai"
)

// The Ollama v0.12.6 transcripts the openai engine's tests replay (their
// README says where they come from).
const ollamaDir = "../../worker/engine/openai/testdata/ollama-0.12.6"

// recorded is one transcript: the request body sent, the raw response.
type recorded struct {
	request     any
	contentType string
	body        []byte
}

func loadRecorded(t *testing.T, name string) recorded {
	t.Helper()
	var r recorded
	if req, err := os.ReadFile(filepath.Join(ollamaDir, name+".request.json")); err == nil {
		if err := json.Unmarshal(req, &r.request); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(filepath.Join(ollamaDir, name+".response.http"))
	if err != nil {
		t.Fatal(err)
	}
	head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("%s: no header end", name)
	}
	for _, l := range strings.Split(string(head), "\r\n") {
		if v, ok := strings.CutPrefix(l, "Content-Type: "); ok {
			r.contentType = v
		}
	}
	r.body = body
	return r
}

// replayOllama answers each request whose decoded body equals a recorded
// request with that recording's response, and GET /v1/models with the
// recorded list; anything else is a 500 naming the miss.
func replayOllama(t *testing.T, names ...string) *httptest.Server {
	t.Helper()
	models := loadRecorded(t, "models")
	var recs []recorded
	for _, n := range names {
		recs = append(recs, loadRecorded(t, n))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v1/models" {
			w.Header().Set("Content-Type", models.contentType)
			_, _ = w.Write(models.body)
			return
		}
		var got any
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		for _, rec := range recs {
			if reflect.DeepEqual(got, rec.request) {
				w.Header().Set("Content-Type", rec.contentType)
				_, _ = w.Write(rec.body)
				return
			}
		}
		http.Error(w, "no recording for this request", http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// streamParts returns a stream's data payloads before [DONE] and its
// receipt.
func streamParts(t *testing.T, body []byte) ([]string, *attest.SignedReceipt) {
	t.Helper()
	var payloads []string
	var sr *attest.SignedReceipt
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		p, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || p == "[DONE]" {
			continue
		}
		if strings.Contains(p, attest.ChunkReceiptMember) {
			var err error
			if sr, err = attest.ParseReceipt([]byte(p)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		payloads = append(payloads, p)
	}
	if sr == nil {
		t.Fatalf("stream without a receipt: %s", body)
	}
	return payloads, sr
}

func hasUsageChunk(payloads []string) bool {
	for _, p := range payloads {
		var c struct {
			Usage json.RawMessage `json:"usage"`
		}
		if json.Unmarshal([]byte(p), &c) == nil && len(c.Usage) > 0 && string(c.Usage) != "null" {
			return true
		}
	}
	return false
}

// A stream without stream_options.include_usage carries a receipt with the
// real usage, equal to the non-stream count of the same request, and the
// client's stream has no usage chunk it did not ask for: builtin engine.
func TestStreamReceiptUsageBuiltin(t *testing.T) {
	s := stacktest.Start(t)
	for _, tc := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"teegate-builtin","messages":[{"role":"user","content":"Tell me about the harbor at night."}],"max_tokens":20,"seed":3}`},
		{"/v1/completions", `{"model":"teegate-builtin","prompt":"The lighthouse keeper","max_tokens":12,"seed":5}`},
	} {
		resp, body := post(t, s.URL+tc.path, stacktest.APIKey, tc.body)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		var u struct {
			Usage struct {
				PromptTokens     int64 `json:"prompt_tokens"`
				CompletionTokens int64 `json:"completion_tokens"`
				TotalTokens      int64 `json:"total_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(body, &u); err != nil || u.Usage.TotalTokens == 0 {
			t.Fatalf("non-stream usage: %s", body)
		}
		want := attest.Usage{PromptTokens: u.Usage.PromptTokens, CompletionTokens: u.Usage.CompletionTokens, TotalTokens: u.Usage.TotalTokens}
		nsr, err := attest.ParseReceiptHeader(resp.Header.Get("Teegate-Receipt"))
		if err != nil || nsr.Receipt.Usage != want || nsr.Receipt.UsageSource != attest.UsageFromEngine {
			t.Fatalf("non-stream receipt: %+v %v", nsr, err)
		}

		streamBody := strings.Replace(tc.body, `"seed"`, `"stream":true,"seed"`, 1)
		resp, body = post(t, s.URL+tc.path, stacktest.APIKey, streamBody)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		payloads, sr := streamParts(t, body)
		if sr.Receipt.Usage != want || sr.Receipt.UsageSource != attest.UsageRequested {
			t.Fatalf("%s stream receipt usage %+v (%s), want %+v", tc.path, sr.Receipt.Usage, sr.Receipt.UsageSource, want)
		}
		if hasUsageChunk(payloads) {
			t.Fatalf("the client got a usage chunk it did not ask for: %s", body)
		}

		// Asked for, the usage chunk reaches the client and says the same.
		asked := strings.Replace(tc.body, `"seed"`, `"stream":true,"stream_options":{"include_usage":true},"seed"`, 1)
		_, body = post(t, s.URL+tc.path, stacktest.APIKey, asked)
		payloads, sr = streamParts(t, body)
		if !hasUsageChunk(payloads) || sr.Receipt.Usage != want || sr.Receipt.UsageSource != attest.UsageFromEngine {
			t.Fatalf("include_usage stream: %+v %s", sr.Receipt, body)
		}
	}
}

// The same through the openai engine against the recorded Ollama server:
// the worker asks the upstream for usage (the upstream request is then
// exactly the recorded include_usage request), signs the usage chunk the
// upstream sent, and the client's stream is the upstream stream without it.
func TestStreamReceiptUsageOpenAIEngine(t *testing.T) {
	up := replayOllama(t, "chat-stream-usage", "chat-nonstream")
	eng, err := upstream.New(upstream.Config{BaseURL: up.URL, ModelAliases: map[string]string{"tiny": "tiny:latest"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	s := stacktest.Start(t, stacktest.WithEngines(eng))

	// The client sends the recorded stream request, which does not ask
	// for usage.
	req, err := os.ReadFile(filepath.Join(ollamaDir, "chat-stream.request.json"))
	if err != nil {
		t.Fatal(err)
	}
	resp, body := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, string(req))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	payloads, sr := streamParts(t, body)
	// The upstream's own count for this request, from its usage chunk.
	want := attest.Usage{PromptTokens: 13, CompletionTokens: 12, TotalTokens: 25}
	if sr.Receipt.Usage != want || sr.Receipt.UsageSource != attest.UsageRequested {
		t.Fatalf("stream receipt usage %+v (%s), want %+v", sr.Receipt.Usage, sr.Receipt.UsageSource, want)
	}
	if hasUsageChunk(payloads) || len(payloads) != 13 {
		t.Fatalf("client stream: %d payloads, usage chunk %v", len(payloads), hasUsageChunk(payloads))
	}
	// The prompt count matches the non-stream answer for the same messages
	// (recorded with max_tokens 20: 13 prompt tokens too).
	resp, body = post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, mustRead(t, filepath.Join(ollamaDir, "chat-nonstream.request.json")))
	nsr, err := attest.ParseReceiptHeader(resp.Header.Get("Teegate-Receipt"))
	if resp.StatusCode != 200 || err != nil || nsr.Receipt.Usage.PromptTokens != want.PromptTokens || nsr.Receipt.UsageSource != attest.UsageFromEngine {
		t.Fatalf("non-stream: %d %s %v", resp.StatusCode, body, err)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
