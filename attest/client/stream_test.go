package client

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/teegate/teegate/attest"
)

// receiptChunk is a well-formed (unverifiable) receipt event payload.
func receiptChunk() []byte {
	sr := attest.SignedReceipt{
		Receipt: attest.Receipt{
			Version: attest.ReceiptVersion, RequestID: "r", EvidenceID: strings.Repeat("ab", 32), Model: "m", Stream: true,
			Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		},
		Signature: make([]byte, 64),
	}
	return attest.AppendReceiptChunk(nil, attest.ChunkMeta{ID: "c", Object: "chat.completion.chunk", Model: "m"}, &sr, nil)
}

// chunked reads from b in pieces of the given sizes, cycling.
type chunked struct {
	b     []byte
	sizes []byte
	i     int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(c.sizes) > 0 {
		n = int(c.sizes[c.i%len(c.sizes)])%64 + 1
		c.i++
	}
	n = min(n, len(p), len(c.b))
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

// readStream runs the verifying reader over in, recording the digest it
// hands to finish.
func readStream(in []byte, r io.Reader) (out []byte, digest *[32]byte, err error) {
	s := newStreamReader(io.NopCloser(r), true, func(sr *attest.SignedReceipt, inline []byte, d [32]byte, raw []byte) error {
		digest = &d
		if !bytes.HasPrefix(in, raw) && !bytes.HasPrefix(raw, in) {
			return errors.New("raw copy differs from the input")
		}
		return nil
	}, func() {})
	out, err = io.ReadAll(s)
	return out, digest, err
}

func TestStreamReaderMatchesDigestSSE(t *testing.T) {
	rc := string(receiptChunk())
	for _, tc := range []struct {
		name string
		in   string
		want error // nil: verifies
	}{
		{"lf", "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: " + rc + "\n\ndata: [DONE]\n\n", nil},
		{"crlf", "data: {\"a\":1}\r\n\r\ndata:{\"b\":2}\r\n\r\ndata: " + rc + "\r\n\r\ndata: [DONE]\r\n\r\n", nil},
		{"cr", "data: {\"a\":1}\r\rdata: x\r: comment\revent: e\rdata: " + rc + "\r\r", nil},
		{"empty payloads and comments", ": hi\n\ndata:\ndata: \n\nid: 3\ndata: " + rc, nil},
		{"no receipt eof", "data: {\"a\":1}\n\n", attest.ErrNoReceiptEvent},
		{"done before receipt", "data: {\"a\":1}\n\ndata: [DONE]\n\ndata: " + rc + "\n\n", attest.ErrNoReceiptEvent},
		{"data after receipt", "data: " + rc + "\n\ndata: {\"x\":1}\n\n", ErrDataAfterReceipt},
		{"chunk between receipt and done", "data: " + rc + "\n\ndata: {\"x\":1}\n\ndata: [DONE]\n\n", ErrDataAfterReceipt},
		{"event line after receipt", "data: " + rc + "\nevent: x\n\ndata: [DONE]\n\n", ErrDataAfterReceipt},
		{"comment after receipt", "data: " + rc + "\n\n: x\ndata: [DONE]\n\n", ErrDataAfterReceipt},
		{"bad receipt", "data: {\"teegate_receipt\":{}}\n\n", attest.ErrMalformed},
	} {
		for _, split := range []string{"whole", "bytes"} {
			t.Run(tc.name+" "+split, func(t *testing.T) {
				var r io.Reader = strings.NewReader(tc.in)
				if split == "bytes" {
					r = iotest.OneByteReader(r)
				}
				out, digest, err := readStream([]byte(tc.in), r)
				if tc.want != nil {
					if !errors.Is(err, tc.want) || !errors.Is(err, ErrVerification) {
						t.Fatalf("error %v, want %v", err, tc.want)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if string(out) != tc.in {
					t.Fatalf("pass-through changed the bytes:\n%q\n%q", out, tc.in)
				}
				ref, err := attest.DigestSSE(strings.NewReader(tc.in))
				if err != nil {
					t.Fatal(err)
				}
				if digest == nil || *digest != ref.Digest {
					t.Fatal("digest differs from attest.DigestSSE")
				}
			})
		}
	}
}

// TestStreamReaderFailureWithholdsReceipt: content before a failing receipt
// event is delivered, the receipt event itself is not.
func TestStreamReaderFailureWithholdsReceipt(t *testing.T) {
	in := "data: {\"a\":1}\n\ndata: " + string(receiptChunk()) + "\n\ndata: [DONE]\n\n"
	s := newStreamReader(io.NopCloser(strings.NewReader(in)), false, func(*attest.SignedReceipt, []byte, [32]byte, []byte) error {
		return fail("signature", attest.ErrReceiptSignature)
	}, func() {})
	out, err := io.ReadAll(s)
	if !errors.Is(err, attest.ErrReceiptSignature) {
		t.Fatalf("error %v", err)
	}
	if string(out) != "data: {\"a\":1}\n\n" {
		t.Fatalf("delivered %q", out)
	}
}

func FuzzStreamReader(f *testing.F) {
	rc := string(receiptChunk())
	f.Add([]byte("data: {\"a\":1}\n\ndata: "+rc+"\n\ndata: [DONE]\n\n"), []byte{1, 7, 3})
	f.Add([]byte("data: x\r\ndata:"+rc+"\r"), []byte{0})
	f.Add([]byte(": c\rdata:\r\n\ndata: "+rc), []byte{63, 2})
	f.Fuzz(func(t *testing.T, in, sizes []byte) {
		out, digest, err := readStream(in, &chunked{b: in, sizes: sizes})
		ref, rerr := attest.DigestSSE(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrVerification) {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		if !bytes.Equal(out, in) {
			t.Fatal("pass-through changed the bytes")
		}
		if rerr != nil {
			t.Fatalf("reader verified what DigestSSE rejects: %v", rerr)
		}
		if digest == nil || *digest != ref.Digest {
			t.Fatal("digest differs from attest.DigestSSE")
		}
	})
}
