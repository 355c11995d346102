package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teegate/teegate/worker/engine"
)

func newTestEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// wantEngineError checks that err carries a client-facing *engine.Error with
// the given status, type and code ("" for null), and returns it.
func wantEngineError(t *testing.T, err error, status int, typ, code string) *engine.Error {
	t.Helper()
	ee, ok := engine.AsError(err)
	if !ok {
		t.Fatalf("error %v carries no *engine.Error", err)
	}
	if ee.Status != status || ee.Type != typ {
		t.Errorf("got status %d type %q, want %d %q (message %q)", ee.Status, ee.Type, status, typ, ee.Message)
	}
	wantCode := "<nil>"
	if code != "" {
		wantCode = code
	}
	if got := deref(ee.Code); got != wantCode {
		t.Errorf("got code %s, want %s", got, wantCode)
	}
	if !json.Valid(ee.Body()) {
		t.Errorf("error body is not JSON: %s", ee.Body())
	}
	return ee
}

// drain reads a stream to its end and returns the payloads and the final
// error (io.EOF on a clean end).
func drain(t *testing.T, st engine.Stream) ([]string, error) {
	t.Helper()
	var got []string
	for range 10000 {
		p, err := st.Next(context.Background())
		if err != nil {
			return got, err
		}
		got = append(got, string(p))
	}
	t.Fatal("stream does not end")
	return nil, nil
}

// waitFor fails the test if ch is not closed soon; the bound only turns a
// hang into a failure, it orders nothing.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestConfigValidation(t *testing.T) {
	bad := []struct {
		name string
		cfg  Config
	}{
		{"empty", Config{}},
		{"ftp", Config{BaseURL: "ftp://127.0.0.1:21"}},
		{"no scheme", Config{BaseURL: "127.0.0.1:8000"}},
		{"no host", Config{BaseURL: "http:///v1"}},
		{"userinfo", Config{BaseURL: "http://u:p@127.0.0.1:8000"}},
		{"query", Config{BaseURL: "http://127.0.0.1:8000/?x=1"}},
		{"fragment", Config{BaseURL: "http://127.0.0.1:8000/#f"}},
		{"bad url", Config{BaseURL: "http://[::1"}},
		{"negative timeout", Config{BaseURL: "http://127.0.0.1", Timeout: -1}},
		{"negative idle", Config{BaseURL: "http://127.0.0.1", StreamIdleTimeout: -1}},
		{"negative refresh", Config{BaseURL: "http://127.0.0.1", ModelRefresh: -1}},
		{"negative size", Config{BaseURL: "http://127.0.0.1", MaxResponseBytes: -1}},
		{"negative event", Config{BaseURL: "http://127.0.0.1", MaxEventBytes: -1}},
		{"api key newline", Config{BaseURL: "http://127.0.0.1", APIKey: "k\nX-Evil: 1"}},
		{"alias empty", Config{BaseURL: "http://127.0.0.1", ModelAliases: map[string]string{"": "a"}}},
		{"alias self", Config{BaseURL: "http://127.0.0.1", ModelAliases: map[string]string{"a": "a"}}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New = %v, want ErrInvalidConfig", err)
			}
			if err := tc.cfg.Validate(); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
			}
		})
	}

	good := []struct{ in, want string }{
		{"http://127.0.0.1:8000", "http://127.0.0.1:8000"},
		{"http://127.0.0.1:8000/", "http://127.0.0.1:8000"},
		{"http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"},
		{"http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000"},
		{"https://localhost/ollama/v1", "https://localhost/ollama"},
		{"http://[::1]:11434//", "http://[::1]:11434"},
		{"http://127.0.0.1:8000/v10", "http://127.0.0.1:8000/v10"},
	}
	for _, tc := range good {
		t.Run(tc.in, func(t *testing.T) {
			e := newTestEngine(t, Config{BaseURL: tc.in})
			if e.BaseURL() != tc.want {
				t.Fatalf("BaseURL = %q, want %q", e.BaseURL(), tc.want)
			}
		})
	}
}

func TestReplayNonStream(t *testing.T) {
	trs := loadTranscripts(t)
	rp := newReplay(t, trs)
	e := newTestEngine(t, Config{BaseURL: rp.URL + "/v1", APIKey: "sk-test"})
	for _, tc := range []struct {
		name string
		op   engine.Op
	}{
		{"chat-nonstream", engine.OpChatCompletions},
		{"chat-stop", engine.OpChatCompletions},
		{"completions-nonstream", engine.OpCompletions},
		{"embeddings", engine.OpEmbeddings},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := trs[tc.name]
			res, err := e.Do(context.Background(), engine.Call{Op: tc.op, Body: tr.request, RequestID: "req-1"})
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if res.Stream != nil {
				t.Fatal("non-stream call returned a stream")
			}
			if string(res.Body) != string(tr.body) {
				t.Fatalf("body differs from the recording:\n got %q\nwant %q", res.Body, tr.body)
			}
			h := rp.lastHeader(tc.name)
			for k, want := range map[string]string{
				"Content-Type":  "application/json",
				"Accept":        "application/json",
				"Authorization": "Bearer sk-test",
				"X-Request-Id":  "req-1",
			} {
				if got := h.Get(k); got != want {
					t.Errorf("upstream %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestReplayStream(t *testing.T) {
	trs := loadTranscripts(t)
	rp := newReplay(t, trs)
	e := newTestEngine(t, Config{BaseURL: rp.URL})
	for _, tc := range []struct {
		name string
		op   engine.Op
	}{
		{"chat-stream", engine.OpChatCompletions},
		{"chat-stream-usage", engine.OpChatCompletions},
		{"completions-stream", engine.OpCompletions},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := trs[tc.name]
			want := sseEvents(tr.body)
			if len(want) < 2 || want[len(want)-1] != "[DONE]" {
				t.Fatalf("recording does not end in [DONE]: %q", want)
			}
			want = want[:len(want)-1]

			res, err := e.Do(context.Background(), engine.Call{Op: tc.op, Body: tr.request, Stream: true})
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if res.Body != nil || res.Stream == nil {
				t.Fatal("stream call did not return just a stream")
			}
			defer res.Stream.Close()
			got, err := drain(t, res.Stream)
			if err != io.EOF {
				t.Fatalf("stream ended with %v, want io.EOF", err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("payloads differ from the recording:\n got %q\nwant %q", got, want)
			}
			if _, err := res.Stream.Next(context.Background()); err != io.EOF {
				t.Fatalf("Next after the end = %v, want io.EOF again", err)
			}
			if h := rp.lastHeader(tc.name); h.Get("Accept") != "text/event-stream" || h.Get("Authorization") != "" {
				t.Errorf("upstream headers: Accept %q Authorization %q", h.Get("Accept"), h.Get("Authorization"))
			}
			if tc.name == "chat-stream-usage" {
				last := got[len(got)-1]
				if !strings.Contains(last, `"choices":[]`) || !strings.Contains(last, `"usage"`) {
					t.Fatalf("last chunk is not the usage chunk: %s", last)
				}
			}
		})
	}
}

func TestReplayErrors(t *testing.T) {
	trs := loadTranscripts(t)
	rp := newReplay(t, trs)
	e := newTestEngine(t, Config{BaseURL: rp.URL})
	for _, tc := range []struct {
		name    string
		status  int
		code    string
		message string
	}{
		{"chat-tools", 400, "", "registry.ollama.ai/library/tiny:latest does not support tools"},
		{"error-bad-json", 400, "", "unexpected EOF"},
		{"error-bad-temperature", 400, "", "json: cannot unmarshal string into Go struct field ChatCompletionRequest.temperature of type float64"},
		{"error-no-messages", 400, "", "[] is too short - 'messages'"},
		{"error-unknown-model", 404, CodeModelNotFound, "model 'no-such-model' not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: trs[tc.name].request})
			if err == nil {
				t.Fatalf("Do succeeded: %+v", res)
			}
			ee := wantEngineError(t, err, tc.status, "invalid_request_error", tc.code)
			if ee.Message != tc.message {
				t.Errorf("message %q, want %q", ee.Message, tc.message)
			}
			if ee.Param != nil {
				t.Errorf("param %q, want null", *ee.Param)
			}
		})
	}
}

func TestReplayModels(t *testing.T) {
	trs := loadTranscripts(t)
	ctx := context.Background()
	tiny := engine.Model{ID: "tiny:latest", Object: "model", Created: 1795768654, OwnedBy: "library"}

	t.Run("list", func(t *testing.T) {
		rp := newReplay(t, trs)
		e := newTestEngine(t, Config{BaseURL: rp.URL})
		got, err := e.Models(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The server lists tiny:latest and answers GET /v1/models/tiny:
		// the bare name is offered too.
		bare := tiny
		bare.ID = "tiny"
		if !slices.Equal(got, []engine.Model{tiny, bare}) {
			t.Fatalf("Models = %+v", got)
		}
		if n := rp.hitCount("model-one"); n != 1 {
			t.Fatalf("bare name looked up %d times, want 1", n)
		}
		if _, err := e.RefreshModels(ctx); err != nil || rp.hitCount("model-one") != 1 || rp.hitCount("models") != 2 {
			t.Fatalf("refresh: %v; model-one %d (asked again), models %d", err, rp.hitCount("model-one"), rp.hitCount("models"))
		}
	})
	t.Run("no bare names", func(t *testing.T) {
		rp := newReplay(t, trs)
		e := newTestEngine(t, Config{BaseURL: rp.URL, NoBareNames: true})
		got, err := e.Models(ctx)
		if err != nil || !slices.Equal(got, []engine.Model{tiny}) || rp.hitCount("model-one") != 0 {
			t.Fatalf("Models = %+v, %v", got, err)
		}
	})
	t.Run("aliases", func(t *testing.T) {
		rp := newReplay(t, trs)
		e := newTestEngine(t, Config{BaseURL: rp.URL, ModelAliases: map[string]string{"tiny": "tiny:latest", "ghost": "not-listed"}})
		got, err := e.Models(ctx)
		if err != nil {
			t.Fatal(err)
		}
		alias := tiny
		alias.ID = "tiny"
		if !slices.Equal(got, []engine.Model{tiny, alias}) {
			t.Fatalf("Models = %+v", got)
		}
		m, err := e.Model(ctx, "tiny")
		if err != nil || m != alias {
			t.Fatalf("Model(tiny) = %+v, %v", m, err)
		}
		if n := rp.hitCount("model-one"); n != 0 {
			t.Fatalf("an aliased model was looked up upstream %d times", n)
		}
	})
	t.Run("model-one", func(t *testing.T) {
		rp := newReplay(t, trs)
		e := newTestEngine(t, Config{BaseURL: rp.URL})
		m, err := e.Model(ctx, "tiny")
		want := engine.Model{ID: "tiny", Object: "model", Created: 1795768654, OwnedBy: "library"}
		if err != nil || m != want {
			t.Fatalf("Model(tiny) = %+v, %v", m, err)
		}
		if rp.hitCount("model-one") != 1 || rp.hitCount("models") != 1 {
			t.Fatalf("hits: model-one %d, models %d", rp.hitCount("model-one"), rp.hitCount("models"))
		}
		if m, err := e.Model(ctx, "tiny:latest"); err != nil || m != tiny {
			t.Fatalf("Model(tiny:latest) = %+v, %v", m, err)
		}
		if rp.hitCount("model-one") != 1 || rp.hitCount("models") != 1 {
			t.Fatal("a listed model was fetched again within the refresh interval")
		}
	})
}

// fakeClock is a settable clock for the model cache.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestModelsCache(t *testing.T) {
	var mu sync.Mutex
	hits, fail := 0, false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		hits++
		if fail {
			http.Error(w, "loading", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{"object":"list","data":[{"id":"m1"},{"id":"m1"},{"id":""},{"id":"m2","object":"x","created":1.5e3,"owned_by":"me"}]}`))
	}))
	t.Cleanup(srv.Close)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	e := newTestEngine(t, Config{BaseURL: srv.URL, ModelRefresh: time.Minute, Now: clock.Now})
	ctx := context.Background()
	want := []engine.Model{
		{ID: "m1", Object: "model", OwnedBy: DefaultOwnedBy},
		{ID: "m2", Object: "model", Created: 1500, OwnedBy: "me"},
	}
	hitCount := func() int { mu.Lock(); defer mu.Unlock(); return hits }

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			got, err := e.Models(ctx)
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("Models = %+v, %v", got, err)
			}
		})
	}
	wg.Wait()
	if hitCount() != 1 {
		t.Fatalf("%d upstream fetches for concurrent calls, want 1", hitCount())
	}
	got, _ := e.Models(ctx)
	got[0].ID = "mutated"
	if again, _ := e.Models(ctx); again[0].ID != "m1" || hitCount() != 1 {
		t.Fatalf("cache was changed through a returned slice or refetched: %+v, %d hits", again, hitCount())
	}

	clock.Advance(time.Minute)
	mu.Lock()
	fail = true
	mu.Unlock()
	_, err := e.Models(ctx)
	wantEngineError(t, err, 503, "server_error", "")
	if hitCount() != 2 {
		t.Fatalf("expired cache not refetched: %d hits", hitCount())
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	if got, err := e.Models(ctx); err != nil || !slices.Equal(got, want) || hitCount() != 3 {
		t.Fatalf("after recovery: %+v, %v, %d hits", got, err, hitCount())
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	e.sem <- struct{}{} // hold the refresh lock: the caller must give up on ctx
	_, err = e.Models(canceled)
	<-e.sem
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Models with a canceled ctx while another refresh runs = %v", err)
	}
}

func TestParseModelList(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
		err        bool
	}{
		{"openai", `{"object":"list","data":[{"id":"a","object":"model","created":1,"owned_by":"o"}]}`, []string{"a"}, false},
		{"bare array", `[{"id":"a"},{"id":"b"}]`, []string{"a", "b"}, false},
		{"single object", `{"id":"a","object":"model"}`, []string{"a"}, false},
		{"empty list", `{"object":"list","data":[]}`, []string{}, false},
		{"created string", `{"data":[{"id":"a","created":"12"}]}`, []string{"a"}, false},
		{"no data", `{"object":"list"}`, nil, true},
		{"not json", `<html>`, nil, true},
		{"broken", `{"data":[{"id":`, nil, true},
		{"id not string", `{"data":[{"id":7}]}`, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseModelList([]byte(tc.body))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			var ids []string
			for _, m := range got {
				ids = append(ids, m.ID)
				if m.Object != "model" || m.OwnedBy == "" {
					t.Errorf("model %+v not filled in", m)
				}
			}
			if !tc.err && !slices.Equal(ids, tc.want) && !(len(ids) == 0 && len(tc.want) == 0) {
				t.Fatalf("ids = %q, want %q", ids, tc.want)
			}
		})
	}
}

func TestModelNotFound(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/models":
			w.Write([]byte(`{"data":[{"id":"a"}]}`))
		case "/v1/models/weird%2Fname", "/v1/models/weird/name":
			if r.URL.EscapedPath() != "/v1/models/weird%2Fname" {
				t.Errorf("model id not path-escaped: %s", r.URL.EscapedPath())
			}
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"detail":"Not Found"}`))
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	e := newTestEngine(t, Config{BaseURL: srv.URL})
	for _, id := range []string{"weird/name", "zzz", ""} {
		_, err := e.Model(context.Background(), id)
		wantEngineError(t, err, 404, "invalid_request_error", CodeModelNotFound)
	}
}

// serveStatic answers every request with status, content type and body.
func serveStatic(t *testing.T, status int, ctype, body string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if ctype != "" {
			w.Header().Set("Content-Type", ctype)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

const canary = "PROMPT-CANARY-7f3a"

var canaryBody = []byte(`{"model":"m","messages":[{"role":"user","content":"` + canary + `"}]}`)

func TestUpstreamErrorShapes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		body     string
		wantSt   int
		wantType string
		wantCode string
		wantMsg  string
	}{
		{"vllm flat", 400, `{"object":"error","message":"This model's maximum context length is 2048 tokens.","type":"BadRequestError","param":null,"code":400}`,
			400, "invalid_request_error", "400", "This model's maximum context length is 2048 tokens."},
		{"vllm unknown model", 404, `{"object":"error","message":"The model ` + "`x`" + ` does not exist.","type":"NotFoundError","param":null,"code":404}`,
			404, "invalid_request_error", CodeModelNotFound, "The model `x` does not exist."},
		{"error string", 404, `{"error":"model \"x\" not found, try pulling it first"}`,
			404, "invalid_request_error", CodeModelNotFound, `model "x" not found, try pulling it first`},
		{"tgi", 422, `{"error":"Input validation error: temperature must be strictly positive","error_type":"validation"}`,
			422, "invalid_request_error", "", "Input validation error: temperature must be strictly positive"},
		{"fastapi detail with input", 422, `{"detail":[{"type":"missing","loc":["body","messages",0,"content"],"msg":"Field required","input":{"text":"` + canary + `"}}]}`,
			422, "invalid_request_error", "", "messages.0.content: Field required"},
		{"json with prompt elsewhere", 500, `{"foo":"` + canary + `"}`,
			500, "server_error", "", "inference engine error: internal server error"},
		{"wrapped with extra fields", 400, `{"error":{"message":"bad","type":"invalid_request_error","param":"temperature","code":"bad_temp","input":"` + canary + `"}}`,
			400, "invalid_request_error", "bad_temp", "bad"},
		{"plain text", 500, "engine crashed\n", 500, "server_error", "", "engine crashed"},
		{"overloaded", 503, `{"error":{"message":"overloaded","type":"server_error","code":"overloaded"}}`, 503, "server_error", "overloaded", "overloaded"},
		{"rate limited", 429, `{"error":{"message":"slow down"}}`, 429, "rate_limit_error", "", "slow down"},
		{"upstream auth", 401, `{"error":{"message":"invalid key ` + canary + `"}}`, 502, "server_error", CodeEngineAuth, ""},
		{"redirect", 302, "", 502, "server_error", CodeBadResponse, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := serveStatic(t, tc.status, "application/json", tc.body)
			e := newTestEngine(t, Config{BaseURL: srv.URL})
			_, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: canaryBody})
			ee := wantEngineError(t, err, tc.wantSt, tc.wantType, tc.wantCode)
			if tc.wantMsg != "" && ee.Message != tc.wantMsg {
				t.Errorf("message %q, want %q", ee.Message, tc.wantMsg)
			}
			if strings.Contains(err.Error(), canary) || strings.Contains(string(ee.Body()), canary) {
				t.Errorf("error leaks request text: %v", err)
			}
		})
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the prompt was sent to a redirect target")
	}))
	t.Cleanup(elsewhere.Close)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	e := newTestEngine(t, Config{BaseURL: srv.URL, HTTPClient: &http.Client{}})
	_, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: canaryBody})
	wantEngineError(t, err, 502, "server_error", CodeBadResponse)
}

// rawStream serves a stream request by writing each piece and flushing, so
// the reader sees the given boundaries.
func rawStream(t *testing.T, pieces ...string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		rc := http.NewResponseController(w)
		for _, p := range pieces {
			io.WriteString(w, p)
			rc.Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestStreamFramingAndEnd(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pieces []string
		want   []string
		end    error
	}{
		{"crlf with comments and fields", []string{
			": keep-alive\r\n\r\n",
			"event: chunk\r\nid: 1\r\nretry: 10\r\ndata: {\"a\":1}\r\n\r",
			"\ndata: {\"a\":2}\r\n\r\n",
			"data: [DONE]\r\n\r\n",
		}, []string{`{"a":1}`, `{"a":2}`}, io.EOF},
		{"multi-line data", []string{"data: line1\ndata:line2\ndata\n\n", "data: [DONE]\n\n"},
			[]string{"line1\nline2\n"}, io.EOF},
		{"lone CR", []string{"data: x\r\rdata: [DONE]\r\r"}, []string{"x"}, io.EOF},
		{"truncated after events", []string{"data: 1\n\n", "data: 2\n\n"}, []string{"1", "2"}, ErrStreamTruncated},
		{"truncated mid-event", []string{"data: 1\n\n", "data: {\"partial"}, []string{"1"}, ErrStreamTruncated},
		{"done without blank line", []string{"data: 1\n\ndata: [DONE]"}, []string{"1"}, ErrStreamTruncated},
		{"empty body", nil, nil, ErrStreamTruncated},
		{"oversized event", []string{"data: 1\n\n", "data: " + strings.Repeat("x", 100) + "\n\n"}, []string{"1"}, ErrBadResponse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := rawStream(t, tc.pieces...)
			e := newTestEngine(t, Config{BaseURL: srv.URL, MaxEventBytes: 64})
			res, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: []byte(`{}`), Stream: true})
			if err != nil {
				t.Fatal(err)
			}
			defer res.Stream.Close()
			got, err := drain(t, res.Stream)
			if !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Fatalf("payloads %q, want %q", got, tc.want)
			}
			if !errors.Is(err, tc.end) {
				t.Fatalf("end = %v, want %v", err, tc.end)
			}
			if tc.end == ErrStreamTruncated {
				wantEngineError(t, err, 502, "server_error", CodeStreamTruncated)
			}
			if _, again := res.Stream.Next(context.Background()); !errors.Is(again, tc.end) {
				t.Fatalf("terminal result not repeated: %v", again)
			}
		})
	}
}

func TestStreamNotEventStream(t *testing.T) {
	srv := serveStatic(t, 200, "application/json", `{"id":"x"}`)
	e := newTestEngine(t, Config{BaseURL: srv.URL})
	_, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: []byte(`{}`), Stream: true})
	if !errors.Is(err, ErrBadResponse) {
		t.Fatalf("err = %v, want ErrBadResponse", err)
	}
	wantEngineError(t, err, 502, "server_error", CodeBadResponse)
}

func TestResponseTooLarge(t *testing.T) {
	trs := loadTranscripts(t)
	tr := trs["chat-nonstream"]
	for _, tc := range []struct {
		name    string
		chunked bool
	}{{"content-length", false}, {"chunked", true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.chunked {
					w.Write(tr.body[:10])
					http.NewResponseController(w).Flush()
					w.Write(tr.body[10:])
					return
				}
				w.Header().Set("Content-Length", "301")
				w.Write(tr.body)
			}))
			t.Cleanup(srv.Close)
			e := newTestEngine(t, Config{BaseURL: srv.URL, MaxResponseBytes: 300})
			_, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: tr.request})
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("err = %v, want ErrBadResponse", err)
			}
			e2 := newTestEngine(t, Config{BaseURL: srv.URL, MaxResponseBytes: 301})
			res, err := e2.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: tr.request})
			if err != nil || string(res.Body) != string(tr.body) {
				t.Fatalf("at the exact limit: %v", err)
			}
		})
	}
}

// blockingServer writes events, then holds the request open until the
// client gives up; gone is closed when the handler sees r.Context() end.
func blockingServer(t *testing.T, events ...string) (srv *httptest.Server, gone <-chan struct{}) {
	ch := make(chan struct{})
	var once sync.Once
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		rc.Flush()
		for _, ev := range events {
			io.WriteString(w, ev)
			rc.Flush()
		}
		<-r.Context().Done()
		once.Do(func() { close(ch) })
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

func TestStreamIdleTimeout(t *testing.T) {
	srv, gone := blockingServer(t, "data: first\n\n")
	e := newTestEngine(t, Config{BaseURL: srv.URL, StreamIdleTimeout: 50 * time.Millisecond})
	res, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: []byte(`{}`), Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Stream.Close()
	if p, err := res.Stream.Next(context.Background()); err != nil || string(p) != "first" {
		t.Fatalf("first Next = %q, %v", p, err)
	}
	_, err = res.Stream.Next(context.Background())
	if !errors.Is(err, ErrStreamIdle) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrStreamIdle", err)
	}
	wantEngineError(t, err, 504, "server_error", CodeEngineTimeout)
	waitFor(t, gone, "the engine to see the request canceled")
}

func TestRequestTimeout(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(map[bool]string{false: "non-stream", true: "stream headers"}[stream], func(t *testing.T) {
			ch := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				// The server notices a client going away only once the
				// body is read, as a real engine's does.
				io.Copy(io.Discard, r.Body)
				<-r.Context().Done() // never answers
				close(ch)
			}))
			t.Cleanup(srv.Close)
			e := newTestEngine(t, Config{BaseURL: srv.URL, Timeout: 50 * time.Millisecond})
			_, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: canaryBody, Stream: stream})
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("err = %v, want ErrTimeout", err)
			}
			wantEngineError(t, err, 504, "server_error", CodeEngineTimeout)
			if strings.Contains(err.Error(), canary) {
				t.Fatalf("error leaks request text: %v", err)
			}
			waitFor(t, ch, "the engine to see the request canceled")
		})
	}
}

func TestStreamCancelReachesEngine(t *testing.T) {
	for _, tc := range []struct {
		name string
		// stop ends the stream from the client side and returns the ctx
		// for the next Next call.
		stop func(st engine.Stream, cancelDo context.CancelFunc) context.Context
		want error
	}{
		{"Close", func(st engine.Stream, _ context.CancelFunc) context.Context {
			st.Close()
			return context.Background()
		}, ErrStreamClosed},
		{"Do context", func(_ engine.Stream, cancelDo context.CancelFunc) context.Context {
			cancelDo()
			return context.Background()
		}, context.Canceled},
		{"Next context", func(engine.Stream, context.CancelFunc) context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, gone := blockingServer(t, "data: first\n\n")
			e := newTestEngine(t, Config{BaseURL: srv.URL})
			doCtx, cancelDo := context.WithCancel(context.Background())
			defer cancelDo()
			res, err := e.Do(doCtx, engine.Call{Op: engine.OpChatCompletions, Body: []byte(`{}`), Stream: true})
			if err != nil {
				t.Fatal(err)
			}
			defer res.Stream.Close()
			if p, err := res.Stream.Next(context.Background()); err != nil || string(p) != "first" {
				t.Fatalf("first Next = %q, %v", p, err)
			}
			next := tc.stop(res.Stream, cancelDo)
			if tc.name != "Close" {
				// Ending a context must abort upstream by itself, without
				// Close: run Next so the stream notices.
				if _, err := res.Stream.Next(next); !errors.Is(err, tc.want) {
					t.Fatalf("Next = %v, want %v", err, tc.want)
				}
			}
			waitFor(t, gone, "the engine to see the request canceled")
			_, err = res.Stream.Next(context.Background())
			if !errors.Is(err, tc.want) {
				t.Fatalf("Next after stop = %v, want %v", err, tc.want)
			}
			if _, ok := engine.AsError(err); ok {
				t.Fatalf("a client-side stop was reported as an engine failure: %v", err)
			}
		})
	}
}

// Close from another goroutine must unblock a Next waiting on the engine;
// this is how the worker reacts to a client disconnect.
func TestStreamCloseUnblocksNext(t *testing.T) {
	srv, gone := blockingServer(t)
	e := newTestEngine(t, Config{BaseURL: srv.URL})
	res, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: []byte(`{}`), Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := res.Stream.Next(context.Background())
		done <- err
	}()
	// Next is blocked (or about to be): either way Close must end it.
	res.Stream.Close()
	waitFor(t, gone, "the engine to see the request canceled")
	select {
	case err := <-done:
		if !errors.Is(err, ErrStreamClosed) {
			t.Fatalf("Next = %v, want ErrStreamClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Next still blocked after Close")
	}
	res.Stream.Close() // idempotent
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e := newTestEngine(t, Config{BaseURL: "http://" + addr})
	for _, stream := range []bool{false, true} {
		_, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: canaryBody, Stream: stream})
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
		wantEngineError(t, err, 503, "server_error", CodeEngineUnavailable)
		if strings.Contains(err.Error(), canary) {
			t.Fatalf("error leaks request text: %v", err)
		}
	}
	_, err = e.Models(context.Background())
	wantEngineError(t, err, 503, "server_error", CodeEngineUnavailable)
}

func TestCallerCancelIsNotEngineFailure(t *testing.T) {
	srv := serveStatic(t, 200, "application/json", `{}`)
	e := newTestEngine(t, Config{BaseURL: srv.URL})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e.Do(ctx, engine.Call{Op: engine.OpChatCompletions, Body: []byte(`{}`)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, ok := engine.AsError(err); ok {
		t.Fatalf("caller cancel reported as engine error: %v", err)
	}
}

func TestUnknownOp(t *testing.T) {
	e := newTestEngine(t, Config{BaseURL: "http://127.0.0.1:1"})
	if _, err := e.Do(context.Background(), engine.Call{Op: "images", Body: []byte(`{}`)}); !errors.Is(err, ErrUnknownOp) {
		t.Fatalf("err = %v, want ErrUnknownOp", err)
	}
}

func TestRequestIDHeaderFiltered(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("X-Request-Id")
		w.Write([]byte(`{}`))
	}))
	t.Cleanup(srv.Close)
	e := newTestEngine(t, Config{BaseURL: srv.URL})
	for _, tc := range []struct{ id, want string }{
		{"abc-123", "abc-123"},
		{"bad\r\nX-Evil: 1", ""},
		{strings.Repeat("a", maxRequestIDLen+1), ""},
	} {
		if _, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: []byte(`{}`), RequestID: tc.id}); err != nil {
			t.Fatal(err)
		}
		if h := <-got; h != tc.want {
			t.Errorf("X-Request-Id for %q = %q, want %q", tc.id, h, tc.want)
		}
	}
}

// Streams that end with [DONE] and bodies read whole must leave their
// connection for reuse: one connection serves sequential calls.
func TestConnectionReuse(t *testing.T) {
	trs := loadTranscripts(t)
	var mu sync.Mutex
	conns := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		for _, tr := range trs {
			if tr.request != nil && string(tr.request) == string(body) {
				writeTranscript(w, tr)
				return
			}
		}
		t.Errorf("no transcript for request")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	e := newTestEngine(t, Config{BaseURL: srv.URL})
	for range 3 {
		res, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: trs["chat-stream"].request, Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := drain(t, res.Stream); err != io.EOF {
			t.Fatal(err)
		}
		res.Stream.Close()
		if _, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: trs["chat-nonstream"].request}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if conns != 1 {
		t.Fatalf("%d connections for 6 sequential calls, want 1", conns)
	}
}

// A server that keeps the body open after [DONE] must not hold up the end
// of the stream beyond the drain grace, and is cut off.
func TestStreamDoneWithoutBodyEnd(t *testing.T) {
	srv, gone := blockingServer(t, "data: a\n\ndata: [DONE]\n\n")
	e := newTestEngine(t, Config{BaseURL: srv.URL})
	res, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: []byte(`{}`), Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Stream.Close()
	got, err := drain(t, res.Stream)
	if err != io.EOF || !slices.Equal(got, []string{"a"}) {
		t.Fatalf("got %q, %v", got, err)
	}
	waitFor(t, gone, "the engine to see the request ended")
}

// readAfterDone wraps a transport so the test learns when the client reads
// the body again after it has seen the [DONE] event.
type readAfterDone struct {
	http.RoundTripper
	mu     sync.Mutex
	signal chan struct{} // closed on the first read after [DONE]
}

func (rt *readAfterDone) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := rt.RoundTripper.RoundTrip(r)
	if err == nil {
		rt.mu.Lock()
		resp.Body = &signalBody{ReadCloser: resp.Body, ch: rt.signal}
		rt.mu.Unlock()
	}
	return resp, err
}

func (rt *readAfterDone) CloseIdleConnections() {
	rt.RoundTripper.(interface{ CloseIdleConnections() }).CloseIdleConnections()
}

type signalBody struct {
	io.ReadCloser
	seen []byte
	once sync.Once
	ch   chan struct{}
}

func (b *signalBody) Read(p []byte) (int, error) {
	if bytes.Contains(b.seen, []byte("data: [DONE]\n\n")) {
		b.once.Do(func() { close(b.ch) })
	}
	n, err := b.ReadCloser.Read(p)
	b.seen = append(b.seen, p[:n]...)
	return n, err
}

// When the body's end comes after [DONE] was read (the usual case when the
// server finishes the response a moment later), the stream reads up to it so
// the connection is reused.
func TestStreamDrainKeepsConnection(t *testing.T) {
	rt := &readAfterDone{RoundTripper: newTransport()}
	var mu sync.Mutex
	conns := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		rt.mu.Lock()
		ch := rt.signal
		rt.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: a\n\ndata: [DONE]\n\n")
		http.NewResponseController(w).Flush()
		// End the body only once the client asks for more after [DONE].
		select {
		case <-ch:
		case <-r.Context().Done():
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	e := newTestEngine(t, Config{BaseURL: srv.URL, HTTPClient: &http.Client{Transport: rt}})
	for range 2 {
		rt.mu.Lock()
		rt.signal = make(chan struct{})
		rt.mu.Unlock()
		res, err := e.Do(context.Background(), engine.Call{Op: engine.OpChatCompletions, Body: []byte(`{}`), Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := drain(t, res.Stream); err != io.EOF || !slices.Equal(got, []string{"a"}) {
			t.Fatalf("got %q, %v", got, err)
		}
		res.Stream.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if conns != 1 {
		t.Fatalf("%d connections for 2 sequential streams, want 1", conns)
	}
}

func FuzzParseModelList(f *testing.F) {
	trs := loadTranscripts(f)
	f.Add(trs["models"].body)
	f.Add(trs["model-one"].body)
	f.Add([]byte(`[{"id":"a","created":"7"},{"id":"a"},{"id":""}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		models, err := parseModelList(body)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, m := range models {
			if m.ID == "" || seen[m.ID] || m.Object != "model" || m.OwnedBy == "" {
				t.Fatalf("bad model in list: %+v", m)
			}
			seen[m.ID] = true
		}
	})
}
