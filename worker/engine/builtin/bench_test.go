package builtin

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/teegate/teegate/worker/engine"
)

const benchChat = `{"model":"teegate-builtin","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Tell me how a lighthouse lens works, briefly."}],"max_tokens":16,"temperature":0.7,"seed":1}`

func BenchmarkChatNonStream(b *testing.B) {
	e := testEngine(b)
	call := engine.Call{Op: chatOp, Body: []byte(benchChat), RequestID: "bench"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Do(context.Background(), call); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChatStream(b *testing.B) {
	e := testEngine(b)
	call := engine.Call{Op: chatOp, Body: []byte(`{"stream":true,` + benchChat[1:]), Stream: true, RequestID: "bench"}
	b.ReportAllocs()
	for b.Loop() {
		r, err := e.Do(context.Background(), call)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := r.Stream.Next(context.Background()); err != nil {
				if !errors.Is(err, io.EOF) {
					b.Fatal(err)
				}
				break
			}
		}
		_ = r.Stream.Close()
	}
}

// BenchmarkChatNonStream256 shows the per-token cost on a longer answer.
func BenchmarkChatNonStream256(b *testing.B) {
	e := testEngine(b)
	call := engine.Call{Op: chatOp, Body: []byte(`{"model":"teegate-builtin","messages":[{"role":"user","content":"Tell me how a lighthouse lens works."}],"max_tokens":256,"seed":1}`)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Do(context.Background(), call); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEmbeddings(b *testing.B) {
	e := testEngine(b)
	call := engine.Call{Op: embOp, Body: []byte(`{"model":"teegate-builtin","input":["The lighthouse keeper trimmed the wick at dusk.","Knead the dough and let it rise slowly."]}`)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Do(context.Background(), call); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(Config{}); err != nil {
			b.Fatal(err)
		}
	}
}
