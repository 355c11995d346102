package enclave

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"filippo.io/edwards25519"
)

// presignPool is how many nonce commitments an epoch keeps ready.
const presignPool = 64

// domainPresign separates the derivation of signing nonces from any other
// use of the key's secret prefix.
const domainPresign = "teegate/presign/v1"

// presigner makes Ed25519 signatures (RFC 8032 §5.1.6, verifiable by any
// standard verifier) with their expensive part done ahead of time. An
// Ed25519 signature is (R, S) with R = r·B and S = r + H(R‖A‖M)·a; only the
// base-point multiplication r·B is costly, and it does not depend on the
// message. A background goroutine keeps a pool of (r, R) pairs, so a
// signature on the request path costs one SHA-512 and a scalar
// multiply-add. When the pool is empty a pair is made inline, which costs
// what a plain ed25519.Sign costs.
//
// RFC 8032 derives r from the message so that a broken random source cannot
// repeat it; r is fixed here before the message is known, so instead each r
// is SHA-512(domain ‖ secret prefix ‖ counter ‖ 32 random bytes): the
// counter makes every r of a key distinct even if the random source failed,
// the secret prefix keeps them unpredictable, and each pair is handed out
// exactly once (a channel receive).
type presigner struct {
	a      *edwards25519.Scalar
	prefix [32]byte
	pub    []byte

	counter atomic.Uint64
	pool    chan presigned
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

type presigned struct {
	r  *edwards25519.Scalar
	rr [32]byte // R = r·B, encoded
}

// newPresigner derives the signing scalar from sk as RFC 8032 §5.1.5 does
// and starts filling the pool.
func newPresigner(sk ed25519.PrivateKey) (*presigner, error) {
	h := sha512.Sum512(sk.Seed())
	a, err := new(edwards25519.Scalar).SetBytesWithClamping(h[:32])
	if err != nil {
		return nil, fmt.Errorf("deriving signing scalar: %w", err)
	}
	p := &presigner{a: a, pub: append([]byte(nil), sk.Public().(ed25519.PublicKey)...),
		pool: make(chan presigned, presignPool), stop: make(chan struct{}), done: make(chan struct{})}
	copy(p.prefix[:], h[32:])
	clear(h[:])
	go p.fill()
	return p, nil
}

func (p *presigner) fill() {
	defer close(p.done)
	for {
		n := p.make()
		select {
		case p.pool <- n:
		case <-p.stop:
			n.forget()
			return
		}
	}
}

func (p *presigner) make() presigned {
	var in [len(domainPresign) + 32 + 8 + 32]byte
	off := copy(in[:], domainPresign)
	off += copy(in[off:], p.prefix[:])
	binary.BigEndian.PutUint64(in[off:], p.counter.Add(1))
	off += 8
	_, _ = rand.Read(in[off:]) // never fails (crypto/rand); the counter covers it regardless
	d := sha512.Sum512(in[:])
	r, _ := new(edwards25519.Scalar).SetUniformBytes(d[:]) // 64 bytes: cannot fail
	// in holds the secret prefix and d is r before reduction.
	clear(in[:])
	clear(d[:])
	var out presigned
	out.r = r
	copy(out.rr[:], new(edwards25519.Point).ScalarBaseMult(r).Bytes())
	return out
}

// forget erases the nonce: r together with the public signature made with
// it gives away the signing scalar (a = (S - r)/k).
func (n presigned) forget() { n.r.Set(edwards25519.NewScalar()) }

// sign returns an Ed25519 signature of msg.
func (p *presigner) sign(msg []byte) []byte {
	var n presigned
	select {
	case n = <-p.pool:
	default:
		n = p.make()
	}
	sig := p.signWith(n, msg)
	n.forget()
	return sig
}

// signWith completes a signature with the pair n, which must never be used
// again.
func (p *presigner) signWith(n presigned, msg []byte) []byte {
	h := sha512.New()
	h.Write(n.rr[:])
	h.Write(p.pub)
	h.Write(msg)
	var d [64]byte
	k, _ := new(edwards25519.Scalar).SetUniformBytes(h.Sum(d[:0]))
	s := new(edwards25519.Scalar).MultiplyAdd(k, p.a, n.r)
	sig := make([]byte, ed25519.SignatureSize)
	copy(sig, n.rr[:])
	copy(sig[32:], s.Bytes())
	return sig
}

// close stops the pool and forgets the secrets.
func (p *presigner) close() {
	p.once.Do(func() {
		close(p.stop)
		<-p.done
		for drained := false; !drained; {
			select {
			case n := <-p.pool:
				n.forget()
			default:
				drained = true
			}
		}
		p.a.Set(edwards25519.NewScalar())
		clear(p.prefix[:])
	})
}
