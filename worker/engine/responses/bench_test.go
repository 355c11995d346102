package responses

import (
	"context"
	"encoding/json"
	"io"
	"testing"
)

// BenchmarkChatStreamTranslate is the worker-side cost of answering a
// Responses stream from a chat stream: per chat delta chunk in, one
// response.output_text.delta event out (the fixed events amortized over a
// 64-token answer). BenchmarkChatChunkDecode is the baseline every chat
// stream relay already pays for reading the chunk, for the ratio.
func BenchmarkChatStreamTranslate(b *testing.B) {
	req, err := ParseRequest([]byte(`{"model":"m","input":"hi","stream":true}`))
	if err != nil {
		b.Fatal(err)
	}
	chunk := `{"id":"c","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}]}`
	const tokens = 64
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += tokens {
		src := &chunks{}
		for range tokens {
			src.p = append(src.p, chunk)
		}
		s := NewChatStream(req, "resp_b", 1, func() int64 { return 1 }, src)
		for {
			if _, err := s.Next(context.Background()); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkChatChunkDecode(b *testing.B) {
	chunk := []byte(`{"id":"c","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}]}`)
	b.ReportAllocs()
	for b.Loop() {
		var c chatChunk
		if err := json.Unmarshal(chunk, &c); err != nil {
			b.Fatal(err)
		}
	}
}
