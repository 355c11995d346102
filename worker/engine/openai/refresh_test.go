package openai

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/teegate/teegate/worker/engine"
)

// ollamaLike is an httptest server answering GET /v1/models and
// GET /v1/models/{id} in Ollama's format (shared/testdata/engines): it lists
// "NAME:latest" ids and answers the bare NAME too. Models can be added and
// removed while it runs, and it can be taken down (503, as Ollama answers
// while it restarts) and brought back.
type ollamaLike struct {
	*httptest.Server
	mu      sync.Mutex
	models  []string
	down    bool
	lookups map[string]int
}

func newOllamaLike(t *testing.T, models ...string) *ollamaLike {
	o := &ollamaLike{models: models, lookups: map[string]int{}}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		defer o.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if o.down {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"message":"server busy","type":"api_error","param":null,"code":null}}`))
			return
		}
		if r.URL.Path == "/v1/models" {
			var items []string
			for _, m := range o.models {
				items = append(items, `{"id":"`+m+`","object":"model","created":1795768654,"owned_by":"library"}`)
			}
			w.Write([]byte(`{"object":"list","data":[` + strings.Join(items, ",") + `]}`))
			return
		}
		id, ok := strings.CutPrefix(r.URL.Path, "/v1/models/")
		if ok {
			o.lookups[id]++
			for _, m := range o.models {
				if m == id || m == id+":latest" {
					w.Write([]byte(`{"id":"` + id + `","object":"model","created":1795768654,"owned_by":"library"}`))
					return
				}
			}
		}
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":{"message":"model '` + id + `' not found","type":"api_error","param":null,"code":null}}`))
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *ollamaLike) set(models ...string) { o.mu.Lock(); o.models = models; o.mu.Unlock() }
func (o *ollamaLike) setDown(d bool)       { o.mu.Lock(); o.down = d; o.mu.Unlock() }
func (o *ollamaLike) lookupsOf(id string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lookups[id]
}

func ids(ms []engine.Model) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func TestRefreshModelsFollowsServer(t *testing.T) {
	o := newOllamaLike(t, "tiny:latest")
	e := newTestEngine(t, Config{BaseURL: o.URL})
	ctx := context.Background()
	got, err := e.RefreshModels(ctx)
	if err != nil || !slices.Equal(ids(got), []string{"tiny:latest", "tiny"}) {
		t.Fatalf("first refresh: %v, %v", ids(got), err)
	}

	// Added: offered at the next refresh, although Models' cache is fresh.
	o.set("tiny:latest", "qwen:7b", "llama:latest")
	got, err = e.RefreshModels(ctx)
	if err != nil || !slices.Equal(ids(got), []string{"tiny:latest", "qwen:7b", "llama:latest", "tiny", "llama"}) {
		t.Fatalf("after adding: %v, %v", ids(got), err)
	}
	if cached, _ := e.Models(ctx); !slices.Equal(ids(cached), ids(got)) {
		t.Fatalf("Models after refresh = %v", ids(cached))
	}
	if o.lookupsOf("tiny") != 1 || o.lookupsOf("qwen:7b") != 0 {
		t.Fatalf("lookups: tiny %d, qwen:7b %d", o.lookupsOf("tiny"), o.lookupsOf("qwen:7b"))
	}

	// Removed: withdrawn with its bare name.
	o.set("qwen:7b", "llama:latest")
	got, err = e.RefreshModels(ctx)
	if err != nil || !slices.Equal(ids(got), []string{"qwen:7b", "llama:latest", "llama"}) {
		t.Fatalf("after removing: %v, %v", ids(got), err)
	}

	// Down: the refresh fails as unavailable, the last list stays cached.
	o.setDown(true)
	if _, err := e.RefreshModels(ctx); err == nil {
		t.Fatal("refresh of a server that is down succeeded")
	} else if ee, ok := engine.AsError(err); !ok || ee.Status != http.StatusServiceUnavailable {
		t.Fatalf("refresh while down: %v", err)
	}
	if cached, err := e.Models(ctx); err != nil || !slices.Equal(ids(cached), ids(got)) {
		t.Fatalf("Models while down = %v, %v", ids(cached), err)
	}
	o.setDown(false)
	if got, err := e.RefreshModels(ctx); err != nil || len(got) != 3 {
		t.Fatalf("refresh when back: %v, %v", ids(got), err)
	}
}

// A bare name the server does not know is not offered, and a lookup that
// fails for another reason is asked again at the next refresh.
func TestBareNameRefused(t *testing.T) {
	var mu sync.Mutex
	lookups := 0
	fail := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path == "/v1/models" {
			w.Write([]byte(`{"object":"list","data":[{"id":"a:latest"}]}`))
			return
		}
		lookups++
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNotFound)
	}))
	t.Cleanup(srv.Close)
	e := newTestEngine(t, Config{BaseURL: srv.URL})
	ctx := context.Background()
	for i, wantLookups := range []int{1, 2, 2} {
		got, err := e.RefreshModels(ctx)
		if err != nil || !slices.Equal(ids(got), []string{"a:latest"}) {
			t.Fatalf("refresh %d: %v, %v", i, ids(got), err)
		}
		mu.Lock()
		n := lookups
		fail = false
		mu.Unlock()
		if n != wantLookups {
			t.Fatalf("refresh %d: %d lookups, want %d", i, n, wantLookups)
		}
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.RefreshModels(ctx2); !errors.Is(err, context.Canceled) {
		t.Fatalf("refresh with a canceled context: %v", err)
	}
}
