package attest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/attest/merkle"
)

func signReceipt(priv ed25519.PrivateKey, r Receipt) *SignedReceipt {
	return &SignedReceipt{Receipt: r, Signature: ed25519.Sign(priv, r.AppendSigningInput(nil))}
}

var (
	testRequest  = []byte(`{"model":"builtin","messages":[{"role":"user","content":"Say hi"}]}`)
	testResponse = []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1795773600,"model":"builtin","choices":[{"index":0,"message":{"role":"assistant","content":"Hi."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`)
)

// fixture is a verified bundle, its key and a receipt over testRequest and
// testResponse.
type fixture struct {
	m    *fakeMachine
	k    fakeKeys
	ev   *Verified
	r    Receipt
	opts VerifyOptions
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{m: newFakeMachine("m1"), k: newFakeKeys("k")}
	f.opts = testOpts(f.m)
	raw := mustEncode(t, f.m.bundle(f.k, [32]byte{7}, 1))
	ev, err := VerifyBundleFull(context.Background(), raw, f.opts)
	if err != nil {
		t.Fatal(err)
	}
	f.ev = ev
	f.r = Receipt{
		Version: ReceiptVersion, RequestID: "req-1", EvidenceID: ev.ID, Model: "builtin",
		RequestSHA256: sha256.Sum256(testRequest), ResponseSHA256: sha256.Sum256(testResponse),
		Created: testTime.Add(2 * time.Minute), Usage: Usage{PromptTokens: 9, CompletionTokens: 2, TotalTokens: 11},
	}
	return f
}

// fresh signs n receipts (the i-th with request id req-i and nonce n-i),
// batches them and returns them with the fresh bundle.
func (f *fixture) fresh(t testing.TB, n int) ([]*SignedReceipt, *Verified) {
	t.Helper()
	var srs []*SignedReceipt
	var leaves [][32]byte
	for i := range n {
		r := f.r
		r.RequestID = "req-" + string(rune('a'+i))
		r.Nonce = "n-" + string(rune('a'+i))
		sr := signReceipt(f.k.sign, r)
		srs = append(srs, sr)
		leaves = append(leaves, merkle.LeafHash(sr.Receipt.AppendSigningInput(nil)))
	}
	tree := merkle.New(leaves)
	fb := f.m.bundle(f.k, BatchNonce(uint64(n), tree.Root()), 1)
	fresh, err := VerifyBundleFull(context.Background(), mustEncode(t, fb), f.opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, sr := range srs {
		p, _ := tree.Proof(i)
		sr.Batch = &BatchProof{EvidenceID: fresh.ID, LeafIndex: uint64(i), TreeSize: uint64(n), Proof: p, Root: tree.Root()}
	}
	return srs, fresh
}

func TestReceiptEncodings(t *testing.T) {
	f := newFixture(t)
	srs, _ := f.fresh(t, 3)
	sourced := f.r
	sourced.UsageSource = UsageRequested
	for _, sr := range []*SignedReceipt{signReceipt(f.k.sign, f.r), srs[1], signReceipt(f.k.sign, sourced)} {
		body := sr.Receipt.AppendCanonical(nil)
		assertJCS(t, body)
		env := sr.AppendJSON(nil)
		assertJCS(t, env)
		if !bytes.HasPrefix(sr.Receipt.AppendSigningInput(nil), append([]byte("teegate/receipt/v1\x00"), body...)) {
			t.Fatal("signing input")
		}
		chunk := AppendReceiptChunk(nil, ChunkMeta{ID: "chatcmpl-1", Object: "chat.completion.chunk", Created: 1, Model: "builtin"}, sr, f.ev.Raw)
		forms := map[string][]byte{
			"header":        []byte(sr.HeaderValue()),
			"envelope":      env,
			"chunk":         chunk,
			"data line":     append(append([]byte("data: "), chunk...), "\r\n"...),
			"data no space": append([]byte("data:"), chunk...),
		}
		for name, in := range forms {
			t.Run(name, func(t *testing.T) {
				got, ev, err := ParseReceiptChunk(in)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, sr) {
					t.Fatalf("parsed receipt differs:\n%+v\n%+v", got, sr)
				}
				if strings.Contains(name, "chunk") || strings.HasPrefix(name, "data") {
					if !bytes.Equal(ev, f.ev.Raw) {
						t.Fatal("inline evidence not returned verbatim")
					}
				}
			})
		}
	}
}

func TestParseReceiptRejects(t *testing.T) {
	f := newFixture(t)
	env := string(signReceipt(f.k.sign, f.r).AppendJSON(nil))
	tests := map[string]string{
		"empty":              "",
		"garbage":            "!!!",
		"bad base64":         "eyJ=",
		"not object":         "[1]",
		"unknown member":     strings.Replace(env, `"signature"`, `"x":1,"signature"`, 1),
		"unknown in receipt": strings.Replace(env, `"stream"`, `"x":1,"stream"`, 1),
		"uppercase hex":      strings.Replace(env, `"request_sha256":"`, `"request_sha256":"A`, 1),
		"short signature":    strings.Replace(env, `"signature":"`, `"signature":"AAAA`, 1),
		"missing usage":      strings.Replace(env, `"usage"`, `"usagex"`, 1),
		"version 1":          strings.Replace(env, `"version":2`, `"version":1`, 1),
		"version 3":          strings.Replace(env, `"version":2`, `"version":3`, 1),
		"bad time":           strings.Replace(env, `Z"`, `+00:00"`, 1),
		"bad evidence id":    strings.Replace(env, `"evidence_id":"`, `"evidence_id":"x`, 1),
		"chunk bad receipt":  `{"choices":[],"teegate_receipt":{}}`,
		"negative usage":     strings.Replace(env, `"prompt_tokens":9`, `"prompt_tokens":-9`, 1),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseReceipt([]byte(in)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestReceiptStrictness: the schema rules of docs/attestation.md §1 and
// §7.1 that a lenient JSON or base64 decoder would let through, each failing
// with ErrMalformed.
func TestReceiptStrictness(t *testing.T) {
	f := newFixture(t)
	sr := signReceipt(f.k.sign, f.r)
	env := string(sr.AppendJSON(nil))
	hdr := sr.HeaderValue()
	sig := base64.RawURLEncoding.EncodeToString(sr.Signature)
	tests := []struct{ name, in string }{
		{"empty nonce", strings.Replace(env, `"model":`, `"nonce":"","model":`, 1)},
		{"empty usage_source", strings.Replace(env, `"version":`, `"usage_source":"","version":`, 1)},
		{"unknown usage_source", strings.Replace(env, `"version":`, `"usage_source":"guess","version":`, 1)},
		{"null usage_source", strings.Replace(env, `"version":`, `"usage_source":null,"version":`, 1)},
		{"null nonce", strings.Replace(env, `"model":`, `"nonce":null,"model":`, 1)},
		{"missing model", strings.Replace(env, `"model":"builtin",`, ``, 1)},
		{"null model", strings.Replace(env, `"model":"builtin"`, `"model":null`, 1)},
		{"LF in signature", strings.Replace(env, sig, sig[:40]+`\n`+sig[40:], 1)},
		{"CRLF in signature", strings.Replace(env, sig, sig[:40]+`\r\n`+sig[40:], 1)},
		{"LF in header", hdr[:50] + "\n" + hdr[50:]},
		{"CR in header", hdr[:50] + "\r" + hdr[50:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseReceipt([]byte(tt.in)); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
	// The model member is required but may be empty; line breaks around a
	// header value are whitespace, not part of it.
	empty := f.r
	empty.Model = ""
	esr := signReceipt(f.k.sign, empty)
	for _, in := range []string{string(esr.AppendJSON(nil)), hdr + "\r\n"} {
		if _, err := ParseReceipt([]byte(in)); err != nil {
			t.Fatalf("%.40s: %v", in, err)
		}
	}
	for _, s := range []string{"AAE", ""} {
		if _, err := DecodeBase64URL(s); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"AA\nE", "AAE\n", "\rAAE", "AAE=", "AA+E", "AAF"} {
		if _, err := DecodeBase64URL(s); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%q: %v", s, err)
		}
	}
}

func TestVerifyReceipt(t *testing.T) {
	f := newFixture(t)
	sr := signReceipt(f.k.sign, f.r)
	if err := VerifyReceipt(sr, f.ev, nil, ReceiptCheck{Request: testRequest, Response: testResponse}); err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(testResponse)
	if err := VerifyReceipt(sr, f.ev, nil, ReceiptCheck{Request: testRequest, ResponseDigest: &d}); err != nil {
		t.Fatal(err)
	}
	srs, fresh := f.fresh(t, 5)
	for _, sr := range srs {
		if err := VerifyReceipt(sr, f.ev, fresh, ReceiptCheck{Request: testRequest, Response: testResponse, Nonce: sr.Receipt.Nonce}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVerifyReceiptRejects(t *testing.T) {
	f := newFixture(t)
	other := newFixture(t)
	other.k = newFakeKeys("other")
	otherRaw := mustEncode(t, f.m.bundle(other.k, [32]byte{7}, 1))
	otherEv, err := VerifyBundleFull(context.Background(), otherRaw, f.opts)
	if err != nil {
		t.Fatal(err)
	}
	type input struct {
		sr    *SignedReceipt
		ev    *Verified
		fresh *Verified
		chk   ReceiptCheck
	}
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 1; return b }
	tests := []struct {
		name   string
		mutate func(in *input)
		want   error
	}{
		{"request byte", func(in *input) { in.chk.Request = flip(in.chk.Request, 10) }, ErrRequestHash},
		{"response byte", func(in *input) { in.chk.Response = flip(in.chk.Response, 40) }, ErrResponseHash},
		{"stream digest", func(in *input) { d := sha256.Sum256(nil); in.chk.ResponseDigest = &d }, ErrResponseHash},
		{"signature byte", func(in *input) { in.sr.Signature = flip(in.sr.Signature, 5) }, ErrReceiptSignature},
		{"receipt model", func(in *input) { in.sr.Receipt.Model = "builtio" }, ErrReceiptSignature},
		{"receipt request id", func(in *input) { in.sr.Receipt.RequestID = "req-2" }, ErrReceiptSignature},
		{"receipt usage", func(in *input) { in.sr.Receipt.Usage.TotalTokens++ }, ErrReceiptSignature},
		{"receipt created", func(in *input) { in.sr.Receipt.Created = in.sr.Receipt.Created.Add(time.Second) }, ErrReceiptSignature},
		{"receipt stream flag", func(in *input) { in.sr.Receipt.Stream = true }, ErrReceiptSignature},
		{"receipt request hash", func(in *input) { in.sr.Receipt.RequestSHA256[0] ^= 1 }, ErrReceiptSignature},
		{"receipt nonce added", func(in *input) { in.sr.Receipt.Nonce = "x" }, ErrReceiptSignature},
		{"receipt names other bundle", func(in *input) { in.sr.Receipt.EvidenceID = otherEv.ID }, ErrEvidenceMismatch},
		{"other bundle offered", func(in *input) { in.ev = otherEv }, ErrEvidenceMismatch},
		{"other key same id", func(in *input) {
			ev := *in.ev
			ev.Bundle = otherEv.Bundle
			in.ev = &ev
		}, ErrReceiptSignature},
		{"no bundle", func(in *input) { in.ev = nil }, ErrEvidenceMismatch},
		{"nonce sent, none in receipt", func(in *input) { in.chk.Nonce = "n-a" }, ErrNonceMismatch},
		{"version", func(in *input) { in.sr.Receipt.Version = 1 }, ErrUnsupportedVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &input{sr: signReceipt(f.k.sign, f.r), ev: f.ev, chk: ReceiptCheck{Request: testRequest, Response: testResponse}}
			tt.mutate(in)
			err := VerifyReceipt(in.sr, in.ev, in.fresh, in.chk)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyReceiptBatchRejects(t *testing.T) {
	f := newFixture(t)
	otherKeys := newFakeKeys("other")
	tests := []struct {
		name   string
		mutate func(sr *SignedReceipt, fresh **Verified, chk *ReceiptCheck)
		want   error
	}{
		{"nonce without proof", func(sr *SignedReceipt, fresh **Verified, chk *ReceiptCheck) { sr.Batch = nil }, ErrBatchProof},
		{"wrong nonce", func(sr *SignedReceipt, fresh **Verified, chk *ReceiptCheck) { chk.Nonce = "n-z" }, ErrNonceMismatch},
		{"root byte", func(sr *SignedReceipt, fresh **Verified, chk *ReceiptCheck) { sr.Batch.Root[0] ^= 1 }, ErrBatchProof},
		{"proof byte", func(sr *SignedReceipt, fresh **Verified, chk *ReceiptCheck) { sr.Batch.Proof[1][31] ^= 1 }, ErrBatchProof},
		{"leaf index", func(sr *SignedReceipt, fresh **Verified, chk *ReceiptCheck) { sr.Batch.LeafIndex++ }, ErrBatchProof},
		{"tree size", func(sr *SignedReceipt, fresh **Verified, chk *ReceiptCheck) { sr.Batch.TreeSize = 2 }, ErrBatchProof},
		{"proof evidence id", func(sr *SignedReceipt, fresh **Verified, chk *ReceiptCheck) {
			sr.Batch.EvidenceID = sr.Receipt.EvidenceID
		}, ErrBatchProof},
		{"no fresh bundle", func(sr *SignedReceipt, fresh **Verified, chk *ReceiptCheck) { *fresh = nil }, ErrBatchProof},
		{"fresh bundle not over root", func(sr *SignedReceipt, fresh **Verified, chk *ReceiptCheck) {
			v, err := VerifyBundleFull(context.Background(), mustEncode(t, f.m.bundle(f.k, [32]byte{9}, 1)), f.opts)
			if err != nil {
				t.Fatal(err)
			}
			sr.Batch.EvidenceID = v.ID
			*fresh = v
		}, ErrBatchProof},
		{"fresh bundle of another key", func(sr *SignedReceipt, fresh **Verified, chk *ReceiptCheck) {
			v, err := VerifyBundleFull(context.Background(), mustEncode(t, f.m.bundle(otherKeys, BatchNonce(sr.Batch.TreeSize, sr.Batch.Root), 1)), f.opts)
			if err != nil {
				t.Fatal(err)
			}
			sr.Batch.EvidenceID = v.ID
			*fresh = v
		}, ErrBatchProof},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srs, fresh := f.fresh(t, 5)
			sr := srs[2]
			chk := ReceiptCheck{Request: testRequest, Response: testResponse, Nonce: sr.Receipt.Nonce}
			tt.mutate(sr, &fresh, &chk)
			if err := VerifyReceipt(sr, f.ev, fresh, chk); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestReceiptHeaderEveryByte flips each byte of a header value: the result
// must fail to parse or fail to verify.
func TestReceiptHeaderEveryByte(t *testing.T) {
	f := newFixture(t)
	srs, fresh := f.fresh(t, 3)
	h := []byte(srs[1].HeaderValue())
	env := srs[1].AppendJSON(nil)
	chk := ReceiptCheck{Request: testRequest, Response: testResponse, Nonce: srs[1].Receipt.Nonce}
	for _, in := range [][]byte{h, env} {
		for i := range in {
			mut := bytes.Clone(in)
			mut[i] ^= 0x01
			sr, err := ParseReceipt(mut)
			if err != nil {
				continue
			}
			if VerifyReceipt(sr, f.ev, fresh, chk) == nil {
				t.Fatalf("byte %d of %.10s… flipped still verifies", i, in)
			}
		}
	}
}

func TestVerifierReceipt(t *testing.T) {
	f := newFixture(t)
	v := NewVerifier(f.opts, 16)
	srs, fresh := f.fresh(t, 2)
	chk := ReceiptCheck{Request: testRequest, Response: testResponse, Nonce: srs[0].Receipt.Nonce}
	ctx := context.Background()
	if _, err := v.Receipt(ctx, srs[0], chk, nil, nil); !errors.Is(err, ErrEvidenceMismatch) {
		t.Fatalf("unknown bundle: %v", err)
	}
	if _, err := v.Receipt(ctx, srs[0], chk, fresh.Raw, fresh.Raw); !errors.Is(err, ErrEvidenceMismatch) {
		t.Fatalf("wrong bundle offered: %v", err)
	}
	c, err := v.Receipt(ctx, srs[0], chk, f.ev.Raw, fresh.Raw)
	if err != nil || c.Binding == nil {
		t.Fatal(err)
	}
	// Both bundles are now cached: no bytes needed.
	if _, err := v.Receipt(ctx, srs[0], chk, nil, nil); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseReceipt(f *testing.F) {
	fx := newFixture(f)
	srs, _ := fx.fresh(f, 3)
	sr := signReceipt(fx.k.sign, fx.r)
	f.Add([]byte(sr.HeaderValue()))
	f.Add(sr.AppendJSON(nil))
	f.Add(AppendReceiptChunk(nil, ChunkMeta{ID: "c", Object: "chat.completion.chunk"}, srs[0], nil))
	for _, name := range []string{"receipt.envelope.json", "receipt.header.txt", "fresh.envelope.json"} {
		if b, err := readVector(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		sr, err := ParseReceipt(in)
		if err != nil {
			return
		}
		// A parsed receipt re-encodes and parses back to itself.
		again, err := ParseReceipt(sr.AppendJSON(nil))
		if err != nil || !reflect.DeepEqual(again, sr) {
			t.Fatalf("re-parse differs: %v", err)
		}
		_ = VerifyReceipt(sr, fx.ev, nil, ReceiptCheck{})
	})
}

func BenchmarkVerifyReceiptCached(b *testing.B) {
	f := newFixture(b)
	req := bytes.Repeat([]byte("r"), 2048)
	resp := bytes.Repeat([]byte("s"), 4096)
	r := f.r
	r.RequestSHA256, r.ResponseSHA256 = sha256.Sum256(req), sha256.Sum256(resp)
	sr := signReceipt(f.k.sign, r)
	v := NewVerifier(f.opts, 16)
	ctx := context.Background()
	chk := ReceiptCheck{Request: req, Response: resp}
	if _, err := v.Receipt(ctx, sr, chk, f.ev.Raw, nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Receipt(ctx, sr, chk, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseReceiptHeader(b *testing.B) {
	f := newFixture(b)
	h := []byte(signReceipt(f.k.sign, f.r).HeaderValue())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseReceipt(h); err != nil {
			b.Fatal(err)
		}
	}
}

// TestVerifyReceiptTime: genuinely signed receipts dated before their
// bundle or in the future are refused (issue 11, finding 3).
func TestVerifyReceiptTime(t *testing.T) {
	f := newFixture(t)
	created := f.ev.Bundle.Created
	chk := ReceiptCheck{Request: testRequest, Response: testResponse, Now: created.Add(time.Hour)}
	for _, tc := range []struct {
		name string
		at   time.Time
		want error
	}{
		{"at the bundle", created, nil},
		{"within the skew before the bundle", created.Add(-4 * time.Minute), nil},
		{"dated 2001", time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), ErrReceiptTime},
		{"an hour before the bundle", created.Add(-time.Hour), ErrReceiptTime},
		{"dated 9999", time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), ErrReceiptTime},
		{"an hour in the future", chk.Now.Add(time.Hour), ErrReceiptTime},
		{"within the skew in the future", chk.Now.Add(4 * time.Minute), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.r
			r.Created = tc.at
			err := VerifyReceipt(signReceipt(f.k.sign, r), f.ev, nil, chk)
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestBatchTreeHead: leaf_index and tree_size are authenticated (issue 11,
// finding 4). The path of leaf 1 in a tree of 3 also verifies in a tree of
// 4 (its last entry standing for a subtree); the fresh bundle commits to
// the tree size, so the changed size is refused, and so is a changed index.
func TestBatchTreeHead(t *testing.T) {
	f := newFixture(t)
	srs, fresh := f.fresh(t, 3)
	sr := srs[1]
	chk := ReceiptCheck{Request: testRequest, Response: testResponse, Nonce: sr.Receipt.Nonce, Now: testTime.Add(time.Hour)}
	if err := VerifyReceipt(sr, f.ev, fresh, chk); err != nil {
		t.Fatal(err)
	}
	leaf := merkle.LeafHash(sr.Receipt.AppendSigningInput(nil))
	if err := merkle.VerifyInclusion(leaf, 1, 4, sr.Batch.Proof, sr.Batch.Root); err != nil {
		t.Fatalf("the path of leaf 1 of 3 no longer verifies in a tree of 4 (%v): pick another example", err)
	}
	for name, mutate := range map[string]func(b *BatchProof){
		"tree size 3 -> 4":  func(b *BatchProof) { b.TreeSize = 4 },
		"tree size 3 -> 2":  func(b *BatchProof) { b.TreeSize = 2 },
		"leaf index 1 -> 0": func(b *BatchProof) { b.LeafIndex = 0 },
		"leaf index 1 -> 2": func(b *BatchProof) { b.LeafIndex = 2 },
	} {
		t.Run(name, func(t *testing.T) {
			cp := *sr
			b := *sr.Batch
			mutate(&b)
			cp.Batch = &b
			if err := VerifyReceipt(&cp, f.ev, fresh, chk); !errors.Is(err, ErrBatchProof) {
				t.Fatalf("got %v, want ErrBatchProof", err)
			}
		})
	}
}

// TestBatchSameMachine: a fresh bundle must be of the receipt's epoch and
// machine, not only of its signing key (§9.4 step 2).
func TestBatchSameMachine(t *testing.T) {
	f := newFixture(t)
	f.r.Created = testTime.Add(20 * time.Minute)
	srs, _ := f.fresh(t, 3)
	sr := srs[0]
	chk := ReceiptCheck{Request: testRequest, Response: testResponse, Nonce: sr.Receipt.Nonce, Now: testTime.Add(time.Hour)}
	nonce := BatchNonce(sr.Batch.TreeSize, sr.Batch.Root)
	for name, edit := range map[string]func(b *Bundle){
		"another worker": func(b *Bundle) { b.Worker.ID = "w-other" },
		"created before the receipt": func(b *Bundle) {
			// Inside the epoch, but 20 minutes before the receipt.
			b.Created = testEpoch.NotBefore
		},
		"another epoch window": func(b *Bundle) {
			b.Epoch.Grace += time.Second
			b.CPUEvidence = f.m.cpuEvidence(ReportData(b.SigningPub, b.HPKEPub, GPUEvidenceDigest(b.GPUs), b.EpochNonce, b.Epoch))
		},
	} {
		t.Run(name, func(t *testing.T) {
			b := f.m.bundle(f.k, nonce, 1)
			edit(b)
			f.k.signBundle(b)
			v, err := VerifyBundleFull(context.Background(), mustEncode(t, b), f.opts)
			if err != nil {
				t.Fatalf("bundle: %v", err)
			}
			cp := *sr
			bp := *sr.Batch
			bp.EvidenceID = v.ID
			cp.Batch = &bp
			if err := VerifyReceipt(&cp, f.ev, v, chk); !errors.Is(err, ErrBatchProof) {
				t.Fatalf("got %v, want ErrBatchProof", err)
			}
		})
	}
}
