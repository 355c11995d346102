package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/client"
)

func fuzzTranscript(f *testing.F, name string) *client.Transcript {
	f.Helper()
	tr, err := client.LoadTranscript(filepath.Join(transcriptDir, name+".transcript.json"))
	if err != nil {
		f.Fatal(err)
	}
	return tr
}

// FuzzReadBundle: an evidence file never panics readBundle, is refused
// only with attest.ErrMalformed, reads as its JSON or as the bytes its
// base64url decodes to, and the header form of what it read reads back
// the same.
func FuzzReadBundle(f *testing.F) {
	for _, name := range []string{"chat", "fresh"} {
		tr := fuzzTranscript(f, name)
		for _, b := range [][]byte{tr.Evidence, tr.FreshEvidence} {
			if b == nil {
				continue
			}
			f.Add(b)
			f.Add(append(bytes.Clone(b), '\n'))
			f.Add([]byte(base64.RawURLEncoding.EncodeToString(b) + "\r\n"))
		}
	}
	f.Add([]byte("eyJ4IjoxfQ=")) // padded: the header form has none
	f.Add([]byte(" \n"))
	path := filepath.Join(f.TempDir(), "evidence")
	f.Fuzz(func(t *testing.T, file []byte) {
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := readBundle(path)
		trimmed := bytes.TrimSpace(file)
		if err != nil {
			if !errors.Is(err, attest.ErrMalformed) {
				t.Fatalf("untyped error %v", err)
			}
			if len(trimmed) == 0 || trimmed[0] == '{' {
				t.Fatalf("refused JSON or an empty file: %v", err)
			}
			return
		}
		if len(trimmed) == 0 || trimmed[0] == '{' {
			if !bytes.Equal(got, trimmed) {
				t.Fatal("JSON form not read as is")
			}
		} else if dec, derr := base64.RawURLEncoding.Strict().DecodeString(string(trimmed)); derr != nil || !bytes.Equal(got, dec) {
			t.Fatalf("base64url form read as other bytes (%v)", derr)
		}
		if len(got) == 0 {
			return
		}
		if err := os.WriteFile(path, []byte(base64.RawURLEncoding.EncodeToString(got)), 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := readBundle(path)
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("header form of an accepted bundle: %v", err)
		}
	})
}

// FuzzVerifyResponseFiles: whatever the receipt and response files hold,
// `teegate verify response` never panics, and on a failure it prints
// nothing as verified. Seeds are the client's recorded transcripts, with
// the receipt as a header value, as the stream's final chunk, or left to
// be found in the stream.
func FuzzVerifyResponseFiles(f *testing.F) {
	type kept struct {
		request, evidence, fresh []byte
		nonce                    string
	}
	var byTranscript []kept
	for i, name := range []string{"chat", "stream", "fresh", "fresh-stream"} {
		tr := fuzzTranscript(f, name)
		byTranscript = append(byTranscript, kept{tr.Request, tr.Evidence, tr.FreshEvidence, tr.Nonce})
		chunk := append([]byte("data: "), attest.AppendReceiptChunk(nil, attest.ChunkMeta{ID: "c", Object: "chat.completion.chunk", Model: "builtin"}, tr.Receipt, nil)...)
		for _, receipt := range [][]byte{[]byte(tr.Receipt.HeaderValue() + "\n"), chunk, nil} {
			f.Add(uint8(i), receipt, tr.Response)
		}
	}
	dir := f.TempDir()
	write := func(t *testing.T, name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	f.Fuzz(func(t *testing.T, which uint8, receipt, response []byte) {
		k := byTranscript[int(which)%len(byTranscript)]
		args := []string{
			"--request", write(t, "request.json", k.request),
			"--response", write(t, "response", response),
			"--evidence", write(t, "evidence.json", k.evidence),
			"--allow-simulated",
		}
		if receipt != nil {
			args = append(args, "--receipt", write(t, "receipt", receipt))
		}
		if k.fresh != nil {
			args = append(args, "--fresh-evidence", write(t, "fresh.json", k.fresh))
		}
		if k.nonce != "" {
			args = append(args, "--nonce", k.nonce)
		}
		var out, errOut bytes.Buffer
		if err := runVerifyResponse(context.Background(), args, &out, &errOut); err != nil && out.Len() != 0 {
			t.Fatalf("failed (%v) yet printed %q", err, out.String())
		}
	})
}
