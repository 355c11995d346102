package audit

import (
	"context"
	"encoding/json"
	"testing"
)

// receiptEntry is a receipt record as the gateway appends one per answer.
func receiptEntry() Entry {
	return Entry{Kind: KindReceipt, Tenant: "tenant-1", KeyID: "key_0123456789", RequestID: "req_0123456789abcdef01234567",
		Model: "bench-model", Worker: "worker-1", Provider: "sim", EvidenceID: "ev_0123456789abcdef0123456789abcdef",
		Usage:   &Usage{PromptTokens: 12, CompletionTokens: 16, TotalTokens: 28},
		Receipt: json.RawMessage(`{"receipt":"eyJ2IjoxLCJyZXF1ZXN0X2lkIjoicmVxXzAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2NyIsIm1vZGVsIjoiYmVuY2gtbW9kZWwifQ","signature":"c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl"}`)}
}

// BenchmarkAppendFlush is the audit writer's throughput: b.N receipt
// records appended as the gateway appends them, then flushed into the
// stream (time/op is the writer's cost per record, JetStream included).
func BenchmarkAppendFlush(b *testing.B) {
	js, _ := startJS(b)
	l, err := Open(context.Background(), Config{JS: js, Gateway: "gw-bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	e := receiptEntry()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		l.Append(e)
	}
	if err := l.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
}
