package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/teegate/teegate/attest"
)

var update = flag.Bool("update", false, "rewrite testdata transcripts from a fresh fake gateway")

// recordTranscripts runs a unary, a stream and a fresh-mode call through a
// verifier that keeps transcripts in dir and returns their paths.
func recordTranscripts(t *testing.T, dir string) map[string]string {
	t.Helper()
	g := newFakeGateway(t, 1)
	out := map[string]string{}
	for _, tc := range []struct {
		name   string
		stream bool
		nonce  bool
	}{{"chat", false, false}, {"stream", true, false}, {"fresh", false, true}, {"fresh-stream", true, true}} {
		v, err := NewVerifier(Config{Options: Options{AllowSimulated: true}, RequireNonce: tc.nonce, Transcripts: TranscriptDir(dir)})
		if err != nil {
			t.Fatal(err)
		}
		c := openai.NewClient(option.WithBaseURL(g.srv.URL+"/v1/"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0),
			option.WithHTTPClient(&http.Client{Transport: v.RoundTripper(nil)}))
		var res Result
		ctx := WithResult(context.Background(), &res)
		if tc.stream {
			_, err = chatStream(ctx, c)
		} else {
			_, err = chat(ctx, c)
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		out[tc.name] = filepath.Join(dir, res.RequestID+".json")
	}
	return out
}

func TestTranscriptRoundTrip(t *testing.T) {
	paths := recordTranscripts(t, t.TempDir())
	for name, p := range paths {
		t.Run(name, func(t *testing.T) {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("transcript mode %v, want 0600", fi.Mode().Perm())
			}
			tr, err := LoadTranscript(p)
			if err != nil {
				t.Fatal(err)
			}
			res, err := VerifyTranscript(context.Background(), tr, Options{AllowSimulated: true})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Verified || !res.Claims.Simulated || (tr.Nonce != "") != (res.FreshEvidenceID != "") {
				t.Fatalf("result %+v", res)
			}
			if _, err := VerifyTranscript(context.Background(), tr, Options{}); !errors.Is(err, attest.ErrSimulatedNotAllowed) {
				t.Fatalf("simulated transcript without AllowSimulated: %v", err)
			}
		})
	}
}

// TestGoldenTranscripts verifies the transcripts kept in testdata (made by
// this package's fake gateway with the simulated TEE; -update rewrites
// them), and that one flipped byte in each part fails with its cause.
func TestGoldenTranscripts(t *testing.T) {
	if *update {
		dir := t.TempDir()
		for name, p := range recordTranscripts(t, dir) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join("testdata", name+".transcript.json"), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range []string{"chat", "stream", "fresh", "fresh-stream"} {
		tr, err := LoadTranscript(filepath.Join("testdata", name+".transcript.json"))
		if err != nil {
			t.Fatal(err)
		}
		// Verified as of when they were recorded: the default maximum
		// evidence age would refuse them later.
		saved := tr.Saved
		opts := Options{AllowSimulated: true, Now: func() time.Time { return saved }}
		if _, err := VerifyTranscript(context.Background(), tr, opts); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		muts := []struct {
			part  string
			edit  func(*Transcript)
			cause string
		}{
			{"request", func(t *Transcript) { t.Request = flipAfter(t.Request, `"content":"`) }, "request hash"},
			{"response", func(t *Transcript) { t.Response = flipAfter(t.Response, `"content":"`) }, "response hash"},
			{"evidence", func(t *Transcript) { t.Evidence = flipAfter(t.Evidence, `"cpu_evidence":"`) }, "evidence"},
			{"receipt", func(t *Transcript) { t.Receipt.Signature[3] ^= 1 }, "signature"},
			{"nonce", func(t *Transcript) { t.Nonce += "x" }, "nonce"},
		}
		if tr.Stream {
			// The receipt rides in the stream too: tamper with both.
			muts[3].cause = "receipt"
		}
		if tr.FreshEvidence != nil {
			muts = append(muts, struct {
				part  string
				edit  func(*Transcript)
				cause string
			}{"fresh evidence", func(t *Transcript) { t.FreshEvidence = flipAfter(t.FreshEvidence, `"signature":"`) }, "evidence"})
		}
		for _, m := range muts {
			t.Run(name+" "+m.part, func(t *testing.T) {
				tr, _ := LoadTranscript(filepath.Join("testdata", name+".transcript.json"))
				m.edit(tr)
				_, err := VerifyTranscript(context.Background(), tr, opts)
				if got := Cause(err); got != m.cause {
					t.Fatalf("cause %q, want %q (%v)", got, m.cause, err)
				}
			})
		}
	}
}

func TestDecodeTranscriptRejects(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("testdata", "chat.transcript.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"unknown member", bytes.Replace(good, []byte(`"version"`), []byte(`"extra":1,"version"`), 1)},
		{"version", bytes.Replace(good, []byte(`"version": 1`), []byte(`"version": 2`), 1)},
		{"trailing", append(bytes.Clone(good), '{', '}')},
		{"no receipt", []byte(`{"version":1,"request":"","response":""}`)},
		{"not json", []byte("hello")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeTranscript(tc.in); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzDecodeTranscript(f *testing.F) {
	for _, name := range []string{"chat", "stream", "fresh", "fresh-stream"} {
		b, err := os.ReadFile(filepath.Join("testdata", name+".transcript.json"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := DecodeTranscript(b)
		if err != nil {
			return
		}
		enc, err := tr.Encode()
		if err != nil {
			t.Fatal(err)
		}
		tr2, err := DecodeTranscript(enc)
		if err != nil {
			t.Fatalf("re-encoded transcript rejected: %v", err)
		}
		if !bytes.Equal(tr2.Request, tr.Request) || !bytes.Equal(tr2.Response, tr.Response) ||
			!bytes.Equal(tr2.Receipt.AppendJSON(nil), tr.Receipt.AppendJSON(nil)) {
			t.Fatal("round trip changed the transcript")
		}
		// Offline verification of arbitrary input must fail cleanly.
		_, _ = VerifyTranscript(context.Background(), tr, Options{AllowSimulated: true, Now: func() time.Time { return time.Unix(1.8e9, 0) }})
	})
}

// BenchmarkVerifyCachedReceipt is the client's cost per answer once the
// bundle's verdict is cached: parse the receipt header, hash request and
// response, check the Ed25519 signature. Reading the request's model
// (BenchmarkRequestModel) is left out: it depends on the request's size.
func BenchmarkVerifyCachedReceipt(b *testing.B) {
	tr, err := LoadTranscript(filepath.Join("testdata", "chat.transcript.json"))
	if err != nil {
		b.Fatal(err)
	}
	chk := newChecker(Options{AllowSimulated: true}, 16)
	hv := tr.Receipt.HeaderValue()
	model := requestModel(tr.Request)
	ctx := context.Background()
	if _, err := chk.av.Bundle(ctx, tr.Evidence); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(tr.Request) + len(tr.Response)))
	for b.Loop() {
		sr, err := attest.ParseReceiptHeader(hv) // as Verifier.do reads the header
		if err != nil {
			b.Fatal(err)
		}
		ex := exchange{request: tr.Request, response: tr.Response, receipt: sr, model: model}
		if _, err := chk.verify(ctx, &ex); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRequestModel is the other per-answer cost of Verifier.do:
// reading "model" from the request body with encoding/json, linear in the
// body's size.
func BenchmarkRequestModel(b *testing.B) {
	tr, err := LoadTranscript(filepath.Join("testdata", "chat.transcript.json"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(tr.Request)))
	for b.Loop() {
		if requestModel(tr.Request) == "" {
			b.Fatal("no model")
		}
	}
}

// BenchmarkEd25519Verify is the floor of BenchmarkVerifyCachedReceipt: the
// one signature check every answer needs, measured in the same run.
func BenchmarkEd25519Verify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 300)
	sig := ed25519.Sign(priv, msg)
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify")
		}
	}
}
