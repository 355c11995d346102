package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
	upstream "github.com/teegate/teegate/worker/engine/openai"
)

// changingOllama is an upstream in Ollama's format (the recorded v0.12.6
// transcripts) whose models change while it runs: GET /v1/models lists
// "NAME:TAG" ids, GET /v1/models/NAME answers a bare name for NAME:latest,
// chat completions answer the recorded body for a model it has and its
// recorded 404 for one it has not; down answers 503 to everything.
type changingOllama struct {
	*httptest.Server
	mu     sync.Mutex
	models []string
	down   bool
	chats  map[string]int // requests per model name
}

func (o *changingOllama) has(id string) bool {
	return slices.Contains(o.models, id) || slices.Contains(o.models, id+":latest")
}

func newChangingOllama(t *testing.T, models ...string) *changingOllama {
	t.Helper()
	chat := loadRecorded(t, "chat-nonstream")
	unknown := loadRecorded(t, "error-unknown-model")
	o := &changingOllama{models: models, chats: map[string]int{}}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		defer o.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if o.down {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":{"message":"server is restarting","type":"api_error","param":null,"code":null}}`))
			return
		}
		switch id, isModel := strings.CutPrefix(r.URL.Path, "/v1/models/"); {
		case r.URL.Path == "/v1/models":
			var data []map[string]any
			for _, m := range o.models {
				data = append(data, map[string]any{"id": m, "object": "model", "created": 1795768654, "owned_by": "library"})
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data})
		case isModel && o.has(id):
			_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "object": "model", "created": 1795768654, "owned_by": "library"})
		case r.URL.Path == "/v1/chat/completions":
			var req struct {
				Model string `json:"model"`
			}
			_ = json.NewDecoder(r.Body).Decode(&req)
			if !o.has(req.Model) {
				w.WriteHeader(http.StatusNotFound)
				_, _ = w.Write(unknown.body)
				return
			}
			o.chats[req.Model]++
			w.Header().Set("Content-Type", chat.contentType)
			_, _ = w.Write(chat.body)
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write(unknown.body)
		}
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *changingOllama) set(models ...string) { o.mu.Lock(); o.models = models; o.mu.Unlock() }
func (o *changingOllama) setDown(d bool)       { o.mu.Lock(); o.down = d; o.mu.Unlock() }
func (o *changingOllama) chatsFor(m string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.chats[m]
}

// listedModels is GET /v1/models's ids.
func listedModels(t *testing.T, url string) []string {
	t.Helper()
	resp, body := get(t, url+"/v1/models")
	if resp.StatusCode != 200 {
		t.Fatalf("/v1/models: %d %s", resp.StatusCode, body)
	}
	var l struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range l.Data {
		ids = append(ids, m.ID)
	}
	return ids
}

func readyStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The openai engine in front of a server whose models change (issue 10,
// "what it must show"): an added model is served within the refresh
// interval (60 s at most in production; here the interval is 50 ms and the
// test polls with a deadline), a dropped one stops being offered, the bare
// name the server accepts for NAME:latest routes, and /readyz is not ready
// while the server is down and ready again when it is back. The worker
// is attested: each change is a new key epoch whose evidence names the new
// list, admitted before it serves.
func TestUpstreamModelsFollowTheServer(t *testing.T) {
	up := newChangingOllama(t, "tiny:latest")
	eng, err := upstream.New(upstream.Config{BaseURL: up.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	s := stacktest.Start(t, stacktest.WithEngines(eng), func(c *stack.Config) { c.Worker.ModelRefresh = 50 * time.Millisecond })
	const deadline = 60 * time.Second
	chat := func(model string) int {
		resp, _ := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody(model, false))
		return resp.StatusCode
	}

	// The bare name is offered and routes: the body says "tiny", which
	// the server accepts.
	if got := listedModels(t, s.URL); !slices.Equal(got, []string{"tiny", "tiny:latest"}) {
		t.Fatalf("models at start: %v", got)
	}
	if st := chat("tiny"); st != 200 || up.chatsFor("tiny") != 1 {
		t.Fatalf("chat with the bare name: %d, upstream saw %d", st, up.chatsFor("tiny"))
	}
	if st := readyStatus(t, s.URL); st != 200 {
		t.Fatalf("/readyz at start: %d", st)
	}
	firstEpoch := s.Keepers[0].Current().ID

	// Added while running.
	up.set("tiny:latest", "qwen2.5:0.5b")
	stacktest.Eventually(t, deadline, func() bool { return slices.Contains(listedModels(t, s.URL), "qwen2.5:0.5b") }, "the added model to be offered")
	stacktest.Eventually(t, deadline, func() bool { return chat("qwen2.5:0.5b") == 200 }, "the added model to be served")
	ep := s.Keepers[0].Current()
	if ep.ID == firstEpoch || !slices.Contains(ep.Bundle.Worker.Models, "qwen2.5:0.5b") {
		t.Fatalf("no new epoch naming the added model: %v", ep.Bundle.Worker.Models)
	}

	// Dropped while running: no longer offered, no longer served.
	up.set("qwen2.5:0.5b")
	stacktest.Eventually(t, deadline, func() bool {
		got := listedModels(t, s.URL)
		return !slices.Contains(got, "tiny") && !slices.Contains(got, "tiny:latest")
	}, "the dropped model to be withdrawn")
	if st := chat("tiny"); st == 200 {
		t.Fatal("a dropped model was served")
	}
	if st := chat("qwen2.5:0.5b"); st != 200 {
		t.Fatalf("the remaining model after a drop: %d", st)
	}

	// Down: not ready, requests refused at once as retryable; back: ready.
	up.setDown(true)
	stacktest.Eventually(t, deadline, func() bool { return readyStatus(t, s.URL) == http.StatusServiceUnavailable }, "/readyz to say not ready")
	if st := chat("qwen2.5:0.5b"); st != http.StatusServiceUnavailable {
		t.Fatalf("chat while the engine is down: %d, want 503", st)
	}
	if got := listedModels(t, s.URL); !slices.Contains(got, "qwen2.5:0.5b") {
		t.Fatalf("a model whose engine is down is not listed any more: %v", got)
	}
	up.setDown(false)
	stacktest.Eventually(t, deadline, func() bool { return readyStatus(t, s.URL) == 200 }, "/readyz to say ready again")
	if st := chat("qwen2.5:0.5b"); st != 200 {
		t.Fatalf("chat after the engine came back: %d", st)
	}
}
