package attest

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"testing"
)

// oracleSSEPayloads splits an SSE stream into lines on its own (LF, CRLF,
// CR; a last line needs no terminator) and returns the "data:" payloads,
// one optional space dropped: the reading the stream digest is defined
// over, written independently of scanSSELines.
func oracleSSEPayloads(b []byte) [][]byte {
	var lines [][]byte
	start := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\n':
			lines = append(lines, b[start:i])
			start = i + 1
		case '\r':
			lines = append(lines, b[start:i])
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
			start = i + 1
		}
	}
	if start < len(b) {
		lines = append(lines, b[start:])
	}
	var payloads [][]byte
	for _, l := range lines {
		if p, ok := bytes.CutPrefix(l, []byte("data:")); ok {
			payloads = append(payloads, bytes.TrimPrefix(p, []byte(" ")))
		}
	}
	return payloads
}

// FuzzDigestSSE: DigestSSE never panics; when it accepts a stream, its
// digest is StreamHasher over exactly the payloads before the first
// receipt event, Payloads counts them, and the receipt is that event's;
// when it refuses one, the error says which of the typed failures it was.
func FuzzDigestSSE(f *testing.F) {
	vec, err := os.ReadFile("testdata/vectors/stream.sse")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(vec)
	f.Add(bytes.ReplaceAll(vec, []byte("\n"), []byte("\r\n")))
	f.Add(bytes.ReplaceAll(vec, []byte("\n"), []byte("\r")))
	f.Add(bytes.ReplaceAll(vec, []byte("data: "), []byte("data:")))
	f.Add(append([]byte(": keepalive\nevent: message\nid: 7\n"), vec...))
	f.Add(vec[:len(vec)/2])
	if i := bytes.LastIndex(vec, []byte("data: {")); i >= 0 {
		f.Add(vec[i:]) // the receipt event alone
	}
	f.Add([]byte("data: x\r"))
	f.Add([]byte("data: [DONE]\n\n"))
	f.Add([]byte(`data: {"teegate_receipt":1}` + "\n"))
	f.Add([]byte(`data: {"choices":[],"\u0074eegate_receipt":{}}` + "\n"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		res, err := DigestSSE(bytes.NewReader(stream))
		payloads := oracleSSEPayloads(stream)
		first := -1
		for i, p := range payloads {
			if IsReceiptEvent(p) {
				first = i
				break
			}
		}
		if err != nil {
			switch {
			case errors.Is(err, ErrNoReceiptEvent):
				if first >= 0 {
					t.Fatalf("ErrNoReceiptEvent, but payload %d is a receipt event", first)
				}
			case errors.Is(err, bufio.ErrTooLong):
				if len(stream) <= MaxReceiptSize {
					t.Fatalf("line too long in a %d-byte stream", len(stream))
				}
			default:
				if first < 0 {
					t.Fatalf("refused a stream without a receipt event: %v", err)
				}
				if _, _, perr := ParseReceiptChunk(payloads[first]); perr == nil {
					t.Fatalf("refused a parsable receipt event: %v", err)
				}
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNonCanonical) && !errors.Is(err, ErrUnsupportedVersion) {
					t.Fatalf("untyped receipt error: %v", err)
				}
			}
			return
		}
		if first < 0 || res.Payloads != first {
			t.Fatalf("accepted with %d payloads hashed, oracle's first receipt event is payload %d", res.Payloads, first)
		}
		h := NewStreamHasher()
		for _, p := range payloads[:first] {
			h.Write(p)
		}
		if res.Digest != h.Sum() {
			t.Fatal("digest differs from StreamHasher over the payloads before the receipt event")
		}
		sr, ev, perr := ParseReceiptChunk(payloads[first])
		if perr != nil || res.Receipt == nil {
			t.Fatalf("accepted receipt event does not parse on its own: %v", perr)
		}
		if !bytes.Equal(ev, res.Evidence) {
			t.Fatal("inline evidence differs from the receipt event's")
		}
		a, aerr := sr.MarshalJSON()
		b, berr := res.Receipt.MarshalJSON()
		if aerr != nil || berr != nil || !bytes.Equal(a, b) {
			t.Fatalf("receipt differs from the receipt event's (%v, %v)", aerr, berr)
		}
	})
}
