package attest

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"testing"
)

// oracleSSELines splits an SSE stream into lines on its own (LF, CRLF,
// CR; a last line needs no terminator): the reading the stream digest is
// defined over, written independently of scanSSELines.
func oracleSSELines(b []byte) [][]byte {
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
	return lines
}

func oraclePayload(l []byte) ([]byte, bool) {
	p, ok := bytes.CutPrefix(l, []byte("data:"))
	return bytes.TrimPrefix(p, []byte(" ")), ok
}

// oracleTailOK is the permitted tail after the receipt line, written out:
// nothing; a blank line; a blank line and [DONE]; or those and one more
// blank line.
func oracleTailOK(tail [][]byte) bool {
	if len(tail) == 0 {
		return true
	}
	if len(tail[0]) != 0 || len(tail) > 3 {
		return false
	}
	if len(tail) >= 2 {
		if p, ok := oraclePayload(tail[1]); !ok || string(p) != "[DONE]" {
			return false
		}
	}
	return len(tail) < 3 || len(tail[2]) == 0
}

// FuzzDigestSSE: DigestSSE never panics; when it accepts a stream, its
// digest is the reference digest over exactly the non-comment lines before
// the first receipt line, Payloads counts their data lines, the receipt is
// that event's, and the tail after it is the permitted one; when it
// refuses one, the error says which of the typed failures it was.
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
	f.Add([]byte("data: x\n\ndata: {\"teegate_receipt\":{}}\n\ndata: [DONE]\n\ndata: y\n"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		res, err := DigestSSE(bytes.NewReader(stream))
		lines := oracleSSELines(stream)
		first := -1
		for i, l := range lines {
			if p, ok := oraclePayload(l); ok && IsReceiptEvent(p) {
				first = i
				break
			}
		}
		if err != nil {
			switch {
			case errors.Is(err, ErrNoReceiptEvent):
				if first >= 0 {
					t.Fatalf("ErrNoReceiptEvent, but line %d is a receipt line", first)
				}
			case errors.Is(err, bufio.ErrTooLong):
				if len(stream) <= MaxReceiptSize {
					t.Fatalf("line too long in a %d-byte stream", len(stream))
				}
			case errors.Is(err, ErrDataAfterReceipt):
				if first < 0 || oracleTailOK(lines[first+1:]) {
					t.Fatalf("ErrDataAfterReceipt for a permitted tail: %v", err)
				}
			default:
				if first < 0 {
					t.Fatalf("refused a stream without a receipt event: %v", err)
				}
				p, _ := oraclePayload(lines[first])
				if _, _, perr := ParseReceiptChunk(p); perr == nil {
					t.Fatalf("refused a parsable receipt event: %v", err)
				}
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNonCanonical) && !errors.Is(err, ErrUnsupportedVersion) {
					t.Fatalf("untyped receipt error: %v", err)
				}
			}
			return
		}
		if first < 0 || !oracleTailOK(lines[first+1:]) {
			t.Fatalf("accepted: receipt line %d, tail %q", first, lines[max(first+1, 0):])
		}
		var hashed []string
		n := 0
		for _, l := range lines[:first] {
			if len(l) > 0 && l[0] == ':' {
				continue
			}
			if _, ok := oraclePayload(l); ok {
				n++
			}
			hashed = append(hashed, string(l))
		}
		if res.Payloads != n {
			t.Fatalf("%d payloads counted, oracle %d", res.Payloads, n)
		}
		if res.Digest != refStreamDigest(hashed...) {
			t.Fatal("digest differs from the reference over the lines before the receipt line")
		}
		p, _ := oraclePayload(lines[first])
		sr, ev, perr := ParseReceiptChunk(p)
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
