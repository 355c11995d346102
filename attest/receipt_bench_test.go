package attest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"testing"
)

// BenchmarkReceiptSteps splits a client's per-answer receipt check into its
// steps, to show where the time beside the Ed25519 signature goes.
func BenchmarkReceiptSteps(b *testing.B) {
	f := newFixture(b)
	sr := signReceipt(f.k.sign, f.r)
	hv := sr.HeaderValue()
	env := sr.AppendJSON(nil)
	input := sr.Receipt.AppendSigningInput(nil)
	created := sr.Receipt.Created.UTC().Format(TimeLayout)
	pub := ed25519.PublicKey(f.ev.Bundle.SigningPub)
	v := NewVerifier(f.opts, 16)
	v.Cache().Put(f.ev)
	steps := []struct {
		name string
		fn   func(b *testing.B)
	}{
		{"header base64", func(b *testing.B) {
			if _, err := DecodeBase64URL(hv); err != nil {
				b.Fatal(err)
			}
		}},
		{"envelope decode", func(b *testing.B) {
			var out SignedReceipt
			if err := out.UnmarshalJSON(env); err != nil {
				b.Fatal(err)
			}
		}},
		{"ParseReceiptHeader", func(b *testing.B) {
			if _, err := ParseReceiptHeader(hv); err != nil {
				b.Fatal(err)
			}
		}},
		{"time parse", func(b *testing.B) {
			if _, err := parseTime(created); err != nil {
				b.Fatal(err)
			}
		}},
		{"signing input", func(b *testing.B) {
			var buf [512]byte
			sr.Receipt.AppendSigningInput(buf[:0])
		}},
		{"validate", func(b *testing.B) {
			if err := sr.Receipt.Validate(); err != nil {
				b.Fatal(err)
			}
		}},
		{"cached verdict", func(b *testing.B) {
			if _, ok := v.Known(f.ev.ID); !ok {
				b.Fatal("miss")
			}
		}},
		{"hash request+response", func(b *testing.B) {
			_ = sha256.Sum256(testRequest)
			_ = sha256.Sum256(testResponse)
		}},
		{"ed25519", func(b *testing.B) {
			if !ed25519.Verify(pub, input, sr.Signature) {
				b.Fatal("signature")
			}
		}},
		{"VerifyReceipt", func(b *testing.B) {
			if err := VerifyReceipt(sr, f.ev, nil, ReceiptCheck{Request: testRequest, Response: testResponse}); err != nil {
				b.Fatal(err)
			}
		}},
	}
	for _, s := range steps {
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.fn(b)
			}
		})
	}
}
