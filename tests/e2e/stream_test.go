package e2e

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/internal/enginetest"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker/engine"
)

// A client that disconnects mid-stream cancels generation in the worker.
func TestClientDisconnectCancelsGeneration(t *testing.T) {
	g := enginetest.NewGated("gated")
	s := stacktest.Start(t, stacktest.WithEngines(engine.Engine(g)))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", s.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"gated","messages":[{"role":"user","content":"hi"}],"stream":true}`))
	req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
	go func() { g.Feed <- []byte(`{"n":1}`) }()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("content type %q", ct)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: {\"n\":1}\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	cancel()
	resp.Body.Close()
	// The gateway notices at its next write; keep feeding until the worker
	// closes the engine stream.
	deadline := time.After(20 * time.Second)
	for {
		select {
		case <-g.Closed:
			return
		case g.Feed <- []byte(`{"n":2}`):
		case <-deadline:
			t.Fatal("generation went on after the client disconnected")
		}
	}
}

// Each SSE event is flushed as soon as the worker sends it: the client
// reads chunk N before chunk N+1 exists.
func TestSSEFlushesEachChunk(t *testing.T) {
	g := enginetest.NewGated("gated")
	s := stacktest.Start(t, stacktest.WithEngines(engine.Engine(g)))
	req, _ := http.NewRequest("POST", s.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"gated","messages":[{"role":"user","content":"hi"}],"stream":true}`))
	req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
	go func() { g.Feed <- []byte(`{"n":0}`) }()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	for i := 0; i < 5; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if want := "data: {\"n\":" + string(rune('0'+i)) + "}\n"; line != want {
			t.Fatalf("line %q, want %q", line, want)
		}
		if blank, _ := r.ReadString('\n'); blank != "\n" {
			t.Fatalf("event not terminated: %q", blank)
		}
		if i < 4 {
			// Only now does the next chunk exist.
			g.Feed <- []byte("{\"n\":" + string(rune('1'+i)) + "}")
		}
	}
	close(g.Feed)
	rest, _ := r.ReadString(0)
	receipt, done, ok := strings.Cut(rest, "\n\n")
	if !ok || !strings.HasPrefix(receipt, `data: {`) || !strings.Contains(receipt, `"teegate_receipt"`) || done != "data: [DONE]\n\n" {
		t.Fatalf("tail %q: want the receipt event, then [DONE]", rest)
	}
}
