package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func refStreamDigest(payloads ...string) [32]byte {
	var b []byte
	for _, p := range payloads {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return sha256.Sum256(b)
}

func TestStreamHasher(t *testing.T) {
	h := NewStreamHasher()
	if h.Sum() != sha256.Sum256(nil) {
		t.Fatal("empty stream digest is not SHA-256 of nothing")
	}
	h.Write([]byte("ab"))
	h.Write([]byte(""))
	h.Write([]byte("c"))
	if h.Sum() != refStreamDigest("ab", "", "c") {
		t.Fatal("digest")
	}
	// Re-chunking the same bytes must change the digest.
	h2 := NewStreamHasher()
	h2.Write([]byte("a"))
	h2.Write([]byte("bc"))
	if h2.Sum() == h.Sum() {
		t.Fatal("framing not bound")
	}
	h.Reset()
	if h.Sum() != sha256.Sum256(nil) {
		t.Fatal("reset")
	}
}

func TestDigestSSE(t *testing.T) {
	f := newFixture(t)
	sr := signReceipt(f.k.sign, f.r)
	chunk := string(AppendReceiptChunk(nil, ChunkMeta{ID: "c", Object: "chat.completion.chunk", Created: 1, Model: "builtin"}, sr, nil))
	p1 := `{"choices":[{"delta":{"content":"Hi"}}]}`
	p2 := `{"choices":[{"delta":{"content":"\"teegate_receipt\": not a receipt"}}]}`
	tests := []struct {
		name   string
		stream string
		want   [32]byte
		n      int
	}{
		{"lf", "data: " + p1 + "\n\ndata: " + p2 + "\n\ndata: " + chunk + "\n\ndata: [DONE]\n\n", refStreamDigest(p1, p2), 2},
		{"crlf and comments", ": keepalive\r\n\r\nevent: message\r\ndata: " + p1 + "\r\n\r\ndata:" + p2 + "\r\n\r\ndata: " + chunk + "\r\n\r\n", refStreamDigest(p1, p2), 2},
		{"cr", "data: " + p1 + "\r\rdata: " + chunk + "\r\r", refStreamDigest(p1), 1},
		{"two spaces keep one", "data:  x\n\ndata: " + chunk + "\n\n", refStreamDigest(" x"), 1},
		{"receipt first", "data: " + chunk + "\n\n", refStreamDigest(), 0},
		{"no trailing newline", "data: " + p1 + "\n\ndata: " + chunk, refStreamDigest(p1), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := DigestSSE(strings.NewReader(tt.stream))
			if err != nil {
				t.Fatal(err)
			}
			if res.Digest != tt.want || res.Payloads != tt.n || res.Receipt.Receipt.RequestID != "req-1" {
				t.Fatalf("got %x (%d payloads)", res.Digest, res.Payloads)
			}
		})
	}
	if _, err := DigestSSE(strings.NewReader("data: " + p1 + "\n\ndata: [DONE]\n\n")); !errors.Is(err, ErrNoReceiptEvent) {
		t.Fatalf("no receipt: %v", err)
	}
	bad := strings.Replace(chunk, `"signature":"`, `"signature":"x`, 1)
	if _, err := DigestSSE(strings.NewReader("data: " + bad + "\n\n")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad receipt: %v", err)
	}
}

func BenchmarkStreamHasher(b *testing.B) {
	h := NewStreamHasher()
	p := bytes.Repeat([]byte("x"), 120)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		h.Write(p)
	}
	_ = h.Sum()
}
