package enclave

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/claims"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeAttester: CPU evidence is "FAKECPU" || report_data, GPU reports are
// "FAKEGPU" || nonce. Enough to check what the enclave side binds; the
// formats' own verification is tested in attest and the TEE packages.
type fakeAttester struct {
	gpus   int
	delay  time.Duration
	quotes atomic.Int64
	fail   atomic.Bool
}

func (f *fakeAttester) Kind() string { return "tdx" }

func (f *fakeAttester) GPUEvidence(ctx context.Context, nonce [32]byte) ([]attest.GPUEvidence, error) {
	var out []attest.GPUEvidence
	for range f.gpus {
		out = append(out, attest.GPUEvidence{Arch: "hopper", Report: append([]byte("FAKEGPU"), nonce[:]...), CertChain: []byte("chain")})
	}
	return out, nil
}

func (f *fakeAttester) CPUEvidence(ctx context.Context, rd [64]byte) (CPUEvidence, error) {
	if f.fail.Load() {
		return CPUEvidence{}, errors.New("device gone")
	}
	if f.delay > 0 {
		t := time.NewTimer(f.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return CPUEvidence{}, ctx.Err()
		}
	}
	f.quotes.Add(1)
	return CPUEvidence{Format: "tdx", Raw: append([]byte("FAKECPU"), rd[:]...)}, nil
}

func fakeVerifyOptions() attest.VerifyOptions {
	return attest.VerifyOptions{
		CPU: map[string]attest.CPUVerifier{"tdx": attest.CPUVerifierFunc(func(ctx context.Context, ev []byte, o attest.CPUOptions) (*claims.Claims, error) {
			if len(ev) != 71 || !bytes.HasPrefix(ev, []byte("FAKECPU")) {
				return nil, attest.ErrMalformed
			}
			return &claims.Claims{TEE: "tdx", ReportData: hex.EncodeToString(ev[7:])}, nil
		})},
		GPU: attest.GPUVerifierFunc(func(ctx context.Context, ev attest.GPUEvidence, o attest.GPUOptions) (*claims.GPU, error) {
			return &claims.GPU{Arch: ev.Arch, NonceMatched: bytes.Equal(ev.Report[7:], o.ExpectedNonce[:])}, nil
		}),
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestKeeper(t testing.TB, a Attester, mut func(*KeeperConfig)) (*Keeper, *clock) {
	t.Helper()
	clk := &clock{t: time.Now().UTC()}
	cfg := KeeperConfig{Attester: a, Identity: attest.WorkerIdentity{ID: "w1", Models: []string{"builtin"}}, Now: clk.now, Epoch: time.Hour, Grace: time.Minute}
	if mut != nil {
		mut(&cfg)
	}
	k, err := NewKeeper(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k, clk
}

func testReceipt(req, resp []byte) *attest.Receipt {
	return &attest.Receipt{
		RequestID: "req-1", Model: "builtin", RequestSHA256: sha256.Sum256(req), ResponseSHA256: sha256.Sum256(resp),
		Created: time.Now().UTC().Truncate(time.Second), Usage: attest.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7},
	}
}

func TestKeeperBundleAndReceipt(t *testing.T) {
	for _, gpus := range []int{0, 2} {
		k, _ := newTestKeeper(t, &fakeAttester{gpus: gpus}, nil)
		e := k.Current()
		ev, err := attest.VerifyBundleFull(context.Background(), e.Raw, fakeVerifyOptions())
		if err != nil {
			t.Fatal(err)
		}
		if ev.ID != e.ID || !bytes.Equal(ev.Bundle.SigningPub, e.SigningPub()) || !bytes.Equal(ev.Bundle.HPKEPub, e.HPKEPub()) ||
			len(ev.Claims.GPUs) != gpus || ev.Bundle.Worker.ID != "w1" {
			t.Fatalf("bundle does not match epoch: %+v", ev.Bundle)
		}
		req, resp := []byte(`{"q":1}`), []byte(`{"a":2}`)
		sr, err := k.SignReceipt(testReceipt(req, resp))
		if err != nil {
			t.Fatal(err)
		}
		if sr.Receipt.EvidenceID != e.ID {
			t.Fatal("receipt not tied to the epoch's bundle")
		}
		if err := attest.VerifyReceipt(sr, ev, nil, attest.ReceiptCheck{Request: req, Response: resp}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestKeeperRotationGrace(t *testing.T) {
	var rotated []*Epoch
	k, clk := newTestKeeper(t, &fakeAttester{}, func(c *KeeperConfig) {
		c.OnRotate = func(e *Epoch) { rotated = append(rotated, e) }
	})
	first := k.Current()
	clk.add(time.Hour)
	second, err := k.Rotate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if second.ID == first.ID || second.Nonce == first.Nonce || bytes.Equal(second.SigningPub(), first.SigningPub()) || len(rotated) != 2 {
		t.Fatal("rotation did not produce new keys, nonce and bundle")
	}
	// In grace: the old epoch still signs and resolves.
	if e, ok := k.Lookup(first.ID); !ok || e != first {
		t.Fatal("old epoch not found during grace")
	}
	if _, err := first.Sign([]byte("x")); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Minute)
	if _, ok := k.Lookup(first.ID); ok {
		t.Fatal("old epoch still found after grace")
	}
	if _, err := first.Sign([]byte("x")); !errors.Is(err, ErrEpochRetired) {
		t.Fatalf("retired epoch signed: %v", err)
	}
	if _, err := first.SignReceipt(testReceipt(nil, nil)); !errors.Is(err, ErrEpochRetired) {
		t.Fatalf("retired epoch signed a receipt: %v", err)
	}
	if e, ok := k.Lookup(second.ID); !ok || e != k.Current() {
		t.Fatal("current epoch lookup")
	}
}

func TestKeeperRotationFailureKeepsEpoch(t *testing.T) {
	a := &fakeAttester{}
	k, _ := newTestKeeper(t, a, nil)
	cur := k.Current()
	a.fail.Store(true)
	if _, err := k.Rotate(context.Background()); err == nil {
		t.Fatal("rotation succeeded without evidence")
	}
	if k.Current() != cur {
		t.Fatal("failed rotation replaced the epoch")
	}
	if _, _, err := k.Sign([]byte("x")); err != nil {
		t.Fatal(err)
	}
}

func TestKeeperRun(t *testing.T) {
	ch := make(chan *Epoch, 16)
	a := &fakeAttester{}
	k, err := NewKeeper(context.Background(), KeeperConfig{
		Attester: a, Identity: attest.WorkerIdentity{ID: "w"}, Epoch: 5 * time.Millisecond, Grace: 5 * time.Millisecond,
		OnRotate: func(e *Epoch) { ch <- e },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	first := <-ch
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	second := <-ch
	third := <-ch
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	if first.ID == second.ID || second.ID == third.ID {
		t.Fatal("Run did not rotate")
	}
}

func TestKeeperClose(t *testing.T) {
	k, _ := newTestKeeper(t, &fakeAttester{}, nil)
	e := k.Current()
	k.Close()
	if k.Current() != nil {
		t.Fatal("current after close")
	}
	if _, err := k.SignReceipt(testReceipt(nil, nil)); !errors.Is(err, ErrKeeperClosed) {
		t.Fatal(err)
	}
	if _, err := e.Sign(nil); !errors.Is(err, ErrEpochRetired) {
		t.Fatal(err)
	}
	if _, err := k.Rotate(context.Background()); !errors.Is(err, ErrKeeperClosed) {
		t.Fatal(err)
	}
}

func TestOpenHPKE(t *testing.T) {
	k, _ := newTestKeeper(t, &fakeAttester{}, nil)
	e := k.Current()
	pub, err := hpke.DHKEM(ecdhX25519()).NewPublicKey(e.HPKEPub())
	if err != nil {
		t.Fatal(err)
	}
	ct, err := hpke.Seal(pub, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), []byte("teegate test"), []byte("secret prompt"))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := e.OpenHPKE(hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), []byte("teegate test"), ct)
	if err != nil || string(pt) != "secret prompt" {
		t.Fatalf("open: %v", err)
	}
	ct[len(ct)-1] ^= 1
	if _, err := e.OpenHPKE(hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), []byte("teegate test"), ct); err == nil {
		t.Fatal("tampered ciphertext opened")
	}
}

// TestNoPrivateKeyGetters fails if an exported method or field of the key
// holders hands out private key material.
func TestNoPrivateKeyGetters(t *testing.T) {
	bad := []reflect.Type{
		reflect.TypeFor[ed25519.PrivateKey](), reflect.TypeFor[hpke.PrivateKey](),
		reflect.TypeFor[crypto.Signer](), reflect.TypeFor[crypto.PrivateKey](),
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[*Epoch](), reflect.TypeFor[*Keeper](), reflect.TypeFor[*Batcher]()} {
		for i := range typ.NumMethod() {
			m := typ.Method(i)
			for j := range m.Type.NumOut() {
				for _, b := range bad {
					if m.Type.Out(j) == b {
						t.Errorf("%s.%s returns %s", typ, m.Name, b)
					}
				}
			}
		}
		st := typ.Elem()
		for i := range st.NumField() {
			f := st.Field(i)
			for _, b := range bad {
				if f.IsExported() && f.Type == b {
					t.Errorf("%s.%s is an exported %s", st, f.Name, b)
				}
			}
		}
	}
}

func TestSignFresh(t *testing.T) {
	a := &fakeAttester{delay: 2 * time.Millisecond}
	k, _ := newTestKeeper(t, a, func(c *KeeperConfig) { c.Batch = BatchConfig{Window: 2 * time.Millisecond, MaxSize: 64} })
	before := a.quotes.Load()
	v := attest.NewVerifier(fakeVerifyOptions(), 64)
	req, resp := []byte(`{"q":1}`), []byte(`{"a":2}`)
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			r := testReceipt(req, resp)
			r.Nonce = "nonce-" + string(rune('A'+i%26)) + string(rune('a'+i/26))
			sr, fresh, err := k.SignFresh(context.Background(), r)
			if err != nil {
				errs <- err
				return
			}
			_, err = v.Receipt(context.Background(), sr, attest.ReceiptCheck{Request: req, Response: resp, Nonce: r.Nonce}, k.Current().Raw, fresh)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	quotes := a.quotes.Load() - before
	if quotes >= n/4 {
		t.Fatalf("%d quotes for %d fresh receipts: batching ineffective", quotes, n)
	}
	st := k.Current().batch.Stats()
	t.Logf("%d fresh receipts, %d quotes, %d batches", n, quotes, st.Batches)
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

func ecdhX25519() ecdh.Curve { return ecdh.X25519() }
