package merkle

import (
	"crypto/sha256"
	"errors"
	"fmt"
)

// Hash is a SHA-256 digest.
type Hash = [32]byte

// MaxProofLen bounds an inclusion proof: a tree of 2^63 leaves needs 63.
const MaxProofLen = 64

// ErrProof reports an inclusion proof that does not verify.
var ErrProof = errors.New("inclusion proof invalid")

// LeafHash is SHA-256(0x00 || data).
func LeafHash(data []byte) Hash {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(data)
	var out Hash
	h.Sum(out[:0])
	return out
}

// NodeHash is SHA-256(0x01 || left || right).
func NodeHash(left, right Hash) Hash {
	var buf [65]byte
	buf[0] = 1
	copy(buf[1:], left[:])
	copy(buf[33:], right[:])
	return sha256.Sum256(buf[:])
}

// Tree is a Merkle tree over leaf hashes, kept level by level so that root
// and proofs are read without rehashing. Not safe for concurrent mutation;
// it has none after New.
type Tree struct {
	// levels[0] are the leaf hashes; each next level pairs the previous one,
	// carrying an odd last node up unchanged. That carry yields exactly the
	// RFC 6962 largest-power-of-two split.
	levels [][]Hash
}

// New builds the tree over leaf hashes (already LeafHash'ed). An empty tree
// has root SHA-256("") per RFC 6962.
func New(leaves []Hash) *Tree {
	t := &Tree{levels: [][]Hash{append([]Hash(nil), leaves...)}}
	for cur := t.levels[0]; len(cur) > 1; {
		next := make([]Hash, 0, (len(cur)+1)/2)
		for i := 0; i+1 < len(cur); i += 2 {
			next = append(next, NodeHash(cur[i], cur[i+1]))
		}
		if len(cur)%2 == 1 {
			next = append(next, cur[len(cur)-1])
		}
		t.levels = append(t.levels, next)
		cur = next
	}
	return t
}

// Size is the number of leaves.
func (t *Tree) Size() int { return len(t.levels[0]) }

// Root is the tree head.
func (t *Tree) Root() Hash {
	if len(t.levels[0]) == 0 {
		return sha256.Sum256(nil)
	}
	return t.levels[len(t.levels)-1][0]
}

// Proof returns the audit path of leaf index, bottom-up.
func (t *Tree) Proof(index int) ([]Hash, error) {
	if index < 0 || index >= t.Size() {
		return nil, fmt.Errorf("proving leaf %d of %d: %w", index, t.Size(), ErrProof)
	}
	var path []Hash
	i := index
	for _, level := range t.levels[:len(t.levels)-1] {
		sib := i ^ 1
		if sib < len(level) {
			path = append(path, level[sib])
		}
		// A carried-up odd node has no sibling at this level: nothing to add.
		i /= 2
	}
	return path, nil
}

// VerifyInclusion checks that leaf (a LeafHash) sits at index in a tree of
// size leaves with the given root, following RFC 9162 §2.1.3.2.
func VerifyInclusion(leaf Hash, index, size uint64, proof []Hash, root Hash) error {
	if index >= size || len(proof) > MaxProofLen {
		return fmt.Errorf("verifying leaf %d of %d: %w", index, size, ErrProof)
	}
	fn, sn := index, size-1
	r := leaf
	for _, p := range proof {
		if sn == 0 {
			return fmt.Errorf("verifying leaf %d of %d: proof too long: %w", index, size, ErrProof)
		}
		if fn&1 == 1 || fn == sn {
			r = NodeHash(p, r)
			// Skip the levels where this node was carried up unpaired.
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = NodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 || r != root {
		return fmt.Errorf("verifying leaf %d of %d: %w", index, size, ErrProof)
	}
	return nil
}
