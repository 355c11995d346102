package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// refStreamDigest is the stream digest of docs/attestation.md §8 written
// out: SHA-256("teegate/stream/v2" || 0x00 || for each line:
// u32be(len) || line), over the lines given (comments already left out).
func refStreamDigest(lines ...string) [32]byte {
	b := append([]byte(DomainStream), 0)
	for _, l := range lines {
		b = binary.BigEndian.AppendUint32(b, uint32(len(l)))
		b = append(b, l...)
	}
	return sha256.Sum256(b)
}

func TestStreamHasher(t *testing.T) {
	h := NewStreamHasher()
	if h.Sum() != refStreamDigest() {
		t.Fatal("empty stream digest")
	}
	h.Event("", []byte("ab"))
	h.Event("response.output_text.delta", []byte("c\nd"))
	want := refStreamDigest("data: ab", "", "event: response.output_text.delta", "data: c", "data: d", "")
	if h.Sum() != want {
		t.Fatal("event digest")
	}
	// The same lines read back from the framed bytes give the same digest.
	framed := AppendSSEEvent(nil, "", []byte("ab"))
	framed = AppendSSEEvent(framed, "response.output_text.delta", []byte("c\nd"))
	if string(framed) != "data: ab\n\nevent: response.output_text.delta\ndata: c\ndata: d\n\n" {
		t.Fatalf("framing %q", framed)
	}
	h2 := NewStreamHasher()
	for _, l := range strings.Split(strings.TrimSuffix(string(framed), "\n"), "\n") {
		h2.Line([]byte(l))
	}
	h2.Line([]byte(": keep-alive")) // comments are not hashed
	if h2.Sum() != want {
		t.Fatal("line digest differs from event digest")
	}
	// Re-chunking the same bytes must change the digest.
	h3 := NewStreamHasher()
	h3.Event("", []byte("a"))
	h3.Event("", []byte("b"))
	h4 := NewStreamHasher()
	h4.Event("", []byte("ab"))
	if h3.Sum() == h4.Sum() {
		t.Fatal("event boundaries not bound")
	}
	h.Reset()
	if h.Sum() != refStreamDigest() {
		t.Fatal("reset")
	}
}

func TestAppendSSEEventCannotInjectLines(t *testing.T) {
	got := string(AppendSSEEvent(nil, "x\ndata: evil", []byte("a\r\nb\rc")))
	if got != "event: x\ndata: a\ndata: b\ndata: c\n\n" {
		t.Fatalf("got %q", got)
	}
	if got := string(AppendSSEDone(nil)); got != "data: [DONE]\n\n" {
		t.Fatalf("done %q", got)
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
		{"lf", "data: " + p1 + "\n\ndata: " + p2 + "\n\ndata: " + chunk + "\n\ndata: [DONE]\n\n", refStreamDigest("data: "+p1, "", "data: "+p2, ""), 2},
		{"crlf and comments", ": keepalive\r\n\r\nevent: message\r\ndata: " + p1 + "\r\n\r\ndata:" + p2 + "\r\n\r\ndata: " + chunk + "\r\n\r\n",
			refStreamDigest("", "event: message", "data: "+p1, "", "data:"+p2, ""), 2},
		{"cr", "data: " + p1 + "\r\rdata: " + chunk + "\r\r", refStreamDigest("data: "+p1, ""), 1},
		{"id and retry lines count", "id: 7\nretry: 10\ndata: x\n\ndata: " + chunk + "\n\n", refStreamDigest("id: 7", "retry: 10", "data: x", ""), 1},
		{"receipt first", "data: " + chunk + "\n\n", refStreamDigest(), 0},
		{"no trailing newline", "data: " + p1 + "\n\ndata: " + chunk, refStreamDigest("data: "+p1, ""), 1},
		{"done without blank", "data: " + chunk + "\n\ndata: [DONE]", refStreamDigest(), 0},
		{"done, no space", "data: " + chunk + "\n\ndata:[DONE]\n\n", refStreamDigest(), 0},
		{"responses: named events, named receipt, no done", "event: response.created\ndata: " + p1 + "\n\nevent: teegate.receipt\ndata: " + chunk + "\n\n",
			refStreamDigest("event: response.created", "data: "+p1, "", "event: teegate.receipt"), 1},
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

// TestDigestSSETail: after the receipt line only the blank line ending its
// event, "data: [DONE]" and one blank line may come (finding 1 of issue 11:
// a chunk injected after the receipt reached the user).
func TestDigestSSETail(t *testing.T) {
	f := newFixture(t)
	sr := signReceipt(f.k.sign, f.r)
	rc := "data: " + string(AppendReceiptChunk(nil, ChunkMeta{ID: "c", Object: "chat.completion.chunk", Created: 1, Model: "builtin"}, sr, nil)) + "\n"
	inject := `data: {"choices":[{"delta":{"content":"injected"}}]}` + "\n\n"
	for name, tail := range map[string]string{
		"chunk before done":    "\n" + inject + "data: [DONE]\n\n",
		"chunk after done":     "\ndata: [DONE]\n\n" + inject,
		"chunk in the event":   inject + "data: [DONE]\n\n",
		"event line":           "event: message\n\ndata: [DONE]\n\n",
		"comment":              "\n: hi\ndata: [DONE]\n\n",
		"two dones":            "\ndata: [DONE]\n\ndata: [DONE]\n\n",
		"blank after the end":  "\ndata: [DONE]\n\n\n",
		"done without a blank": "data: [DONE]\n\n",
		"id line":              "\nid: 1\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DigestSSE(strings.NewReader(rc + tail)); !errors.Is(err, ErrDataAfterReceipt) {
				t.Fatalf("got %v, want ErrDataAfterReceipt", err)
			}
		})
	}
}

// TestDigestSSEFraming: an event: line inserted, or a blank line removed,
// changes the digest (finding 2 of issue 11).
func TestDigestSSEFraming(t *testing.T) {
	h := NewStreamHasher()
	var s []byte
	for _, p := range []string{`{"a":1}`, `{"a":2}`} {
		h.Event("", []byte(p))
		s = AppendSSEEvent(s, "", []byte(p))
	}
	base := string(s)
	want := h.Sum()
	for name, stream := range map[string]string{
		"event line":          "event: error\n" + base,
		"blank line removed":  strings.Replace(base, "\n\n", "\n", 1),
		"blank line added":    "\n" + base,
		"id line":             "id: 1\n" + base,
		"retry line":          "retry: 1\n" + base,
		"data space dropped":  strings.Replace(base, "data: ", "data:", 1),
		"events joined":       strings.Replace(base, "}\n\ndata: {", "}\ndata: {", 1),
		"payload split lines": strings.Replace(base, `{"a":1}`, "{\"a\":\ndata: 1}", 1),
	} {
		d := NewStreamDigester()
		for _, l := range strings.Split(strings.TrimSuffix(stream, "\n"), "\n") {
			if _, err := d.Line([]byte(l)); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if d.h.Sum() == want {
			t.Errorf("%s: digest unchanged", name)
		}
	}
}

func BenchmarkStreamHasher(b *testing.B) {
	h := NewStreamHasher()
	p := bytes.Repeat([]byte("x"), 120)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		h.Event("", p)
	}
	_ = h.Sum()
}
