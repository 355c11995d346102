package enclave

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"testing"

	"filippo.io/edwards25519"
)

func newTestPresigner(t testing.TB) (*presigner, ed25519.PublicKey) {
	t.Helper()
	pub, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, err := newPresigner(sk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p, pub
}

// Presigned signatures are standard Ed25519: the standard verifier accepts
// them, and rejects them for any other message or key.
func TestPresignedSignaturesVerify(t *testing.T) {
	p, pub := newTestPresigner(t)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	for i := range 300 { // past the pool size: inline and pooled nonces both
		msg := []byte(fmt.Sprintf("teegate receipt %d", i))
		sig := p.sign(msg)
		if !ed25519.Verify(pub, msg, sig) {
			t.Fatalf("signature %d does not verify", i)
		}
		if ed25519.Verify(pub, append(msg, '!'), sig) || ed25519.Verify(otherPub, msg, sig) {
			t.Fatalf("signature %d verifies for another message or key", i)
		}
		bad := append([]byte(nil), sig...)
		bad[i%64] ^= 1
		if ed25519.Verify(pub, msg, bad) {
			t.Fatalf("flipped signature %d verifies", i)
		}
	}
}

// No nonce commitment is ever used twice, even for the same message.
func TestPresignNoncesNeverRepeat(t *testing.T) {
	p, _ := newTestPresigner(t)
	seen := map[[32]byte]bool{}
	for range 2000 {
		sig := p.sign([]byte("same message"))
		var r [32]byte
		copy(r[:], sig[:32])
		if seen[r] {
			t.Fatal("a nonce commitment was reused")
		}
		seen[r] = true
	}
}

// A retired epoch's presigner stops and forgets its secrets.
func TestPresignerClose(t *testing.T) {
	p, _ := newTestPresigner(t)
	p.close()
	p.close() // idempotent
	if p.a.Equal(edwards25519.NewScalar()) != 1 || p.prefix != [32]byte{} {
		t.Fatal("signing scalar or nonce prefix not cleared")
	}
	select {
	case <-p.done:
	default:
		t.Fatal("fill goroutine still running")
	}
}

func BenchmarkPresignedSign(b *testing.B) {
	p, _ := newTestPresigner(b)
	msg := make([]byte, 400)
	b.ReportAllocs()
	for b.Loop() {
		p.sign(msg)
	}
}

func BenchmarkEd25519SignBaseline(b *testing.B) {
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 400)
	b.ReportAllocs()
	for b.Loop() {
		ed25519.Sign(sk, msg)
	}
}

// BenchmarkPresignedSignWarm is the request-path cost when a pair is ready
// in the pool (the worker had idle CPU since its last signature): the
// message-dependent half of a signature. BenchmarkPresignedSign, back to
// back, is the saturated case, where pairs are made inline as often as not.
// (Reusing one pair across iterations is only sound in a benchmark.)
func BenchmarkPresignedSignWarm(b *testing.B) {
	p, _ := newTestPresigner(b)
	n := p.make()
	msg := make([]byte, 400)
	b.ReportAllocs()
	for b.Loop() {
		p.signWith(n, msg)
	}
}
