package merkle

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

// refRoot is the recursive definition of RFC 6962 §2.1, used as the oracle.
func refRoot(leaves []Hash) Hash {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return NodeHash(refRoot(leaves[:k]), refRoot(leaves[k:]))
}

// refPath is the recursive PATH(m, D[n]) of RFC 6962 §2.1.1.
func refPath(m int, leaves []Hash) []Hash {
	if len(leaves) <= 1 {
		return nil
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	if m < k {
		return append(refPath(m, leaves[:k]), refRoot(leaves[k:]))
	}
	return append(refPath(m-k, leaves[k:]), refRoot(leaves[:k]))
}

func leaves(n int) []Hash {
	out := make([]Hash, n)
	for i := range out {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(i))
		out[i] = LeafHash(b[:])
	}
	return out
}

func TestTreeMatchesRFC(t *testing.T) {
	for n := 0; n <= 70; n++ {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ls := leaves(n)
			tr := New(ls)
			if tr.Root() != refRoot(ls) {
				t.Fatalf("root mismatch")
			}
			for i := 0; i < n; i++ {
				p, err := tr.Proof(i)
				if err != nil {
					t.Fatal(err)
				}
				want := refPath(i, ls)
				if fmt.Sprint(p) != fmt.Sprint(want) {
					t.Fatalf("leaf %d: proof differs from RFC PATH", i)
				}
				if err := VerifyInclusion(ls[i], uint64(i), uint64(n), p, tr.Root()); err != nil {
					t.Fatalf("leaf %d: %v", i, err)
				}
			}
		})
	}
}

// TestKnownRoot pins the empty-tree root and a one-leaf root to RFC 6962
// values computable by hand.
func TestKnownRoot(t *testing.T) {
	if got := New(nil).Root(); got != sha256.Sum256(nil) {
		t.Fatalf("empty root %x", got)
	}
	l := LeafHash([]byte("x"))
	if New([]Hash{l}).Root() != sha256.Sum256([]byte("\x00x")) {
		t.Fatal("one-leaf root is not SHA-256(0x00||x)")
	}
}

func TestVerifyInclusionRejects(t *testing.T) {
	ls := leaves(13)
	tr := New(ls)
	p, _ := tr.Proof(6)
	root := tr.Root()
	flip := func(h Hash) Hash { h[0] ^= 1; return h }
	tests := []struct {
		name        string
		leaf        Hash
		index, size uint64
		proof       []Hash
		root        Hash
	}{
		{"leaf", flip(ls[6]), 6, 13, p, root},
		{"index", ls[6], 7, 13, p, root},
		{"size", ls[6], 6, 8, p, root},
		{"size larger", ls[6], 6, 17, p, root},
		{"proof element", ls[6], 6, 13, append([]Hash{flip(p[0])}, p[1:]...), root},
		{"proof short", ls[6], 6, 13, p[:len(p)-1], root},
		{"proof long", ls[6], 6, 13, append(append([]Hash{}, p...), root), root},
		{"root", ls[6], 6, 13, p, flip(root)},
		{"index past size", ls[6], 13, 13, p, root},
		{"empty", ls[6], 0, 0, nil, root},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyInclusion(tt.leaf, tt.index, tt.size, tt.proof, tt.root)
			if !errors.Is(err, ErrProof) {
				t.Fatalf("got %v, want ErrProof", err)
			}
		})
	}
	if _, err := tr.Proof(13); !errors.Is(err, ErrProof) {
		t.Fatalf("Proof(13): %v", err)
	}
}

func FuzzMerkleProof(f *testing.F) {
	f.Add(uint64(3), uint64(7), []byte{1, 2, 3}, uint8(0))
	f.Add(uint64(0), uint64(1), []byte{}, uint8(1))
	f.Add(uint64(5), uint64(6), []byte{9}, uint8(2))
	f.Fuzz(func(t *testing.T, index, size uint64, proofBytes []byte, mode uint8) {
		// Arbitrary proofs must never panic and never verify against a root
		// they were not built for.
		var proof []Hash
		for i := 0; i+32 <= len(proofBytes) && len(proof) < 70; i += 32 {
			proof = append(proof, Hash(proofBytes[i:i+32]))
		}
		_ = VerifyInclusion(LeafHash(proofBytes), index, size, proof, sha256.Sum256(proofBytes))
		// Honest trees of small size must always verify every leaf.
		n := int(size%40) + 1
		ls := leaves(n)
		tr := New(ls)
		i := int(index % uint64(n))
		p, err := tr.Proof(i)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyInclusion(ls[i], uint64(i), uint64(n), p, tr.Root()); err != nil {
			t.Fatal(err)
		}
		if len(p) > 0 {
			p[int(mode)%len(p)][int(mode)%32] ^= 0x80
			if VerifyInclusion(ls[i], uint64(i), uint64(n), p, tr.Root()) == nil {
				t.Fatal("tampered proof verified")
			}
		}
	})
}

func BenchmarkTree256(b *testing.B) {
	ls := leaves(256)
	b.ReportAllocs()
	for b.Loop() {
		tr := New(ls)
		_, _ = tr.Proof(100)
	}
}
