package enclave

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/teegate/teegate/attest"
)

// ErrEpochRetired: the epoch's grace period is over and its keys are gone.
var ErrEpochRetired = errors.New("key epoch retired")

// ErrOutsideEpoch: a receipt dated outside the epoch's stated validity, or
// a signature asked for while the clock is before the epoch began. The
// epoch's bundles state the window (attest.EpochWindow) and verifiers
// refuse receipts outside it; the keeper refuses to make them.
var ErrOutsideEpoch = errors.New("outside the key epoch's validity")

// Epoch is one key epoch: keys born in the TEE, the nonce and the evidence
// bundle that binds them. Its exported fields are public data; the private
// keys are reachable only through Sign, SignReceipt and OpenHPKE.
type Epoch struct {
	// ID is the bundle id (attest.Bundle.ID), the receipts' evidence_id.
	ID string
	// Bundle and Raw are the evidence bundle and its canonical bytes.
	Bundle *attest.Bundle
	Raw    []byte
	// Nonce is the random epoch nonce.
	Nonce [32]byte
	// Started is when the epoch was attested.
	Started time.Time
	// Window is the validity every bundle of the epoch states (and its
	// report data commits to): the keys sign within it and are erased at
	// its end, Window.ErasedAt(), at the latest.
	Window attest.EpochWindow

	keeper *Keeper
	mu     sync.RWMutex // guards the keys against retirement
	sign   ed25519.PrivateKey
	pre    *presigner // signs with sign, nonce commitments made ahead
	hpke   hpke.PrivateKey
	batch  *Batcher
}

// newKeys generates the epoch's key pair inside the TEE.
func newKeys() (ed25519.PrivateKey, hpke.PrivateKey, error) {
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating signing key: %w", err)
	}
	hk, err := hpke.DHKEM(ecdh.X25519()).GenerateKey()
	if err != nil {
		return nil, nil, fmt.Errorf("generating HPKE key: %w", err)
	}
	return sk, hk, nil
}

// SigningPub is the epoch's Ed25519 public key.
func (e *Epoch) SigningPub() ed25519.PublicKey { return ed25519.PublicKey(e.Bundle.SigningPub) }

// HPKEPub is the epoch's X25519 HPKE public key (32 bytes).
func (e *Epoch) HPKEPub() []byte { return e.Bundle.HPKEPub }

// Sign signs msg with the epoch's signing key. Once the keeper's clock has
// reached the end of the epoch's window it erases the keys instead
// (ErrEpochRetired); before the window's start it refuses
// (ErrOutsideEpoch).
func (e *Epoch) Sign(msg []byte) ([]byte, error) {
	now := e.keeper.now()
	if !now.Before(e.Window.ErasedAt()) {
		e.erase()
		return nil, ErrEpochRetired
	}
	if now.Before(e.Window.NotBefore) {
		return nil, fmt.Errorf("clock %s before the epoch: %w", now.UTC().Format(attest.TimeLayout), ErrOutsideEpoch)
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.sign == nil {
		return nil, ErrEpochRetired
	}
	if e.pre != nil {
		return e.pre.sign(msg), nil
	}
	return ed25519.Sign(e.sign, msg), nil
}

// SignReceipt sets r.EvidenceID to this epoch's bundle id and signs the
// receipt's signing input.
func (e *Epoch) SignReceipt(r *attest.Receipt) (*attest.SignedReceipt, error) {
	r.EvidenceID = e.ID
	if r.Version == 0 {
		r.Version = attest.ReceiptVersion
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("signing receipt: %w", err)
	}
	if !e.Window.Contains(r.Created) {
		return nil, fmt.Errorf("signing receipt created %s: %w", r.Created.UTC().Format(attest.TimeLayout), ErrOutsideEpoch)
	}
	var buf [512]byte
	sig, err := e.Sign(r.AppendSigningInput(buf[:0]))
	if err != nil {
		return nil, fmt.Errorf("signing receipt: %w", err)
	}
	return &attest.SignedReceipt{Receipt: *r, Signature: sig}, nil
}

// SignFresh signs r and waits until a fresh bundle covers it (fresh mode,
// DESIGN §3.3). It returns the receipt with its batch proof and the fresh
// bundle's canonical bytes.
func (e *Epoch) SignFresh(ctx context.Context, r *attest.Receipt) (*attest.SignedReceipt, []byte, error) {
	sr, err := e.SignReceipt(r)
	if err != nil {
		return nil, nil, err
	}
	res, err := e.batch.Add(ctx, sr.Receipt.LeafHash())
	if err != nil {
		return nil, nil, fmt.Errorf("batching fresh receipt: %w", err)
	}
	proof := res.Proof
	sr.Batch = &proof
	return sr, res.Bundle, nil
}

// Attest produces a new bundle for this epoch's keys over another epoch
// nonce (fresh-mode batches, on-demand evidence for a client nonce).
func (e *Epoch) Attest(ctx context.Context, nonce [32]byte) (*attest.Bundle, []byte, error) {
	k := e.keeper
	return buildBundle(ctx, k.cfg.Attester, e.Bundle.SigningPub, e.Bundle.HPKEPub, e.Sign, nonce, e.Window, e.Bundle.Worker, k.now())
}

// OpenHPKE decrypts a single-shot HPKE message (RFC 9180 base mode; enc ||
// ciphertext as crypto/hpke.Seal produces it) sealed to the epoch's HPKE key.
func (e *Epoch) OpenHPKE(kdf hpke.KDF, aead hpke.AEAD, info, ciphertext []byte) ([]byte, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.hpke == nil {
		return nil, ErrEpochRetired
	}
	pt, err := hpke.Open(e.hpke, kdf, aead, info, ciphertext)
	if err != nil {
		return nil, fmt.Errorf("opening HPKE message: %w", err)
	}
	return pt, nil
}

// retire stops the epoch's batcher and erases its keys.
func (e *Epoch) retire() {
	if e.batch != nil {
		e.batch.Close()
	}
	e.erase()
}

// erase drops the keys; later signatures fail with ErrEpochRetired. It
// leaves the batcher alone, so that it may run on the batcher's goroutine
// (a fresh bundle signed past the window's end).
func (e *Epoch) erase() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pre != nil {
		e.pre.close()
		e.pre = nil
	}
	clear(e.sign)
	e.sign, e.hpke = nil, nil
}
