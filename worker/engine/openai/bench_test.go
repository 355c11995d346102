package openai

import (
	"context"
	"io"
	"testing"

	"github.com/teegate/teegate/worker/engine"
)

// BenchmarkNonStreamRoundTrip is one chat completion through Do against the
// replayed Ollama answer on loopback: the adapter's cost plus net/http's,
// without any inference.
func BenchmarkNonStreamRoundTrip(b *testing.B) {
	trs := loadTranscripts(b)
	rp := newReplay(b, trs)
	e := newTestEngine(b, Config{BaseURL: rp.URL})
	tr := trs["chat-nonstream"]
	call := engine.Call{Op: engine.OpChatCompletions, Body: tr.request}
	ctx := context.Background()
	b.SetBytes(int64(len(tr.request) + len(tr.body)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := e.Do(ctx, call)
		if err != nil || len(res.Body) != len(tr.body) {
			b.Fatalf("Do: %v", err)
		}
	}
}

// BenchmarkStreamRoundTrip is one 13-event chat stream through Do and Next.
func BenchmarkStreamRoundTrip(b *testing.B) {
	trs := loadTranscripts(b)
	rp := newReplay(b, trs)
	e := newTestEngine(b, Config{BaseURL: rp.URL})
	tr := trs["chat-stream"]
	call := engine.Call{Op: engine.OpChatCompletions, Body: tr.request, Stream: true}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		res, err := e.Do(ctx, call)
		if err != nil {
			b.Fatalf("Do: %v", err)
		}
		for {
			if _, err := res.Stream.Next(ctx); err != nil {
				if err != io.EOF {
					b.Fatalf("Next: %v", err)
				}
				break
			}
		}
		res.Stream.Close()
	}
}
