package sim

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/nvidia"
	"github.com/teegate/teegate/attest/tdx"
	"github.com/teegate/teegate/enclave"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// verifyOptions wires the production verifiers the way the gateway and the
// client SDK do: the simulated roots a bundle carries become their trust
// anchors only because AllowSimulated is set.
func verifyOptions(allowSim bool) attest.VerifyOptions {
	pool := func(roots []*x509.Certificate) *x509.CertPool {
		if roots == nil {
			return nil
		}
		p := x509.NewCertPool()
		for _, r := range roots {
			p.AddCert(r)
		}
		return p
	}
	return attest.VerifyOptions{
		AllowSimulated: allowSim,
		CPU: map[string]attest.CPUVerifier{"tdx": attest.CPUVerifierFunc(func(ctx context.Context, ev []byte, o attest.CPUOptions) (*claims.Claims, error) {
			now := o.Now
			return tdx.Verify(ctx, ev, tdx.Options{TrustedRoots: pool(o.SimulatedRoots), Now: func() time.Time { return now }})
		})},
		GPU: attest.GPUVerifierFunc(func(ctx context.Context, ev attest.GPUEvidence, o attest.GPUOptions) (*claims.GPU, error) {
			roots := pool(o.SimulatedRoots)
			if roots == nil {
				return nil, errors.New("no NVIDIA root in this test")
			}
			return nvidia.Verify(ctx, nvidia.Evidence{Report: ev.Report, Chain: ev.CertChain, ExpectedNonce: o.ExpectedNonce[:], Arch: ev.Arch}, nvidia.Options{Roots: roots, Now: o.Now})
		}),
	}
}

var (
	rootOnce sync.Once
	testRoot *Root
)

func sharedRoot(t testing.TB) *Root {
	rootOnce.Do(func() {
		r, err := NewRoot()
		if err != nil {
			t.Fatal(err)
		}
		testRoot = r
	})
	return testRoot
}

func TestRootPersistence(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sim")
	r1, err := LoadOrCreateRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r1.Cert.Subject.CommonName, "SIMULATED") || !r1.Cert.IsCA {
		t.Fatalf("root subject %q", r1.Cert.Subject)
	}
	fi, err := os.Stat(filepath.Join(dir, RootKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	r2, err := LoadOrCreateRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !r1.Cert.Equal(r2.Cert) {
		t.Fatal("second start made a new root")
	}
	// Half a root is an error, not a silent new identity.
	if err := os.Remove(filepath.Join(dir, RootCertFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateRoot(dir); err == nil {
		t.Fatal("missing certificate accepted")
	}
	// A key that does not match the certificate is rejected.
	other, _ := NewRoot()
	dir2 := t.TempDir()
	if _, err := LoadOrCreateRoot(dir2); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir2, RootCertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateRoot(dir2); err == nil {
		t.Fatal("mismatched key accepted")
	}
}

func TestSimulatedBundleVerifies(t *testing.T) {
	for _, gpus := range []int{0, 1} {
		a, err := NewAttester(Config{Root: sharedRoot(t), GPUs: gpus, QuoteDelay: NoDelay})
		if err != nil {
			t.Fatal(err)
		}
		k, err := enclave.NewKeeper(context.Background(), enclave.KeeperConfig{Attester: a, Identity: attest.WorkerIdentity{ID: "sim-worker"}})
		if err != nil {
			t.Fatal(err)
		}
		raw := k.Current().Raw
		c, err := attest.VerifyBundle(context.Background(), raw, verifyOptions(true))
		if err != nil {
			t.Fatal(err)
		}
		if c.TEE != claims.TEESimulated || !c.Simulated || len(c.GPUs) != gpus || !c.Binding.ReportDataMatched {
			t.Fatalf("claims %+v", c)
		}
		for _, g := range c.GPUs {
			if g.Arch != "simulated" || !g.NonceMatched || !g.SignatureValid {
				t.Fatalf("gpu claims %+v", g)
			}
		}
		if _, err := attest.VerifyBundle(context.Background(), raw, verifyOptions(false)); !errors.Is(err, attest.ErrSimulatedNotAllowed) {
			t.Fatalf("without AllowSimulated: %v", err)
		}
		// Stripping the simulated root does not make it pass as real: the
		// bundle signature breaks, and the quote fails against Intel's root.
		b, _ := attest.DecodeBundle(raw)
		b.SimulatedRoots = nil
		stripped, _ := b.Encode()
		if _, err := attest.VerifyBundle(context.Background(), stripped, verifyOptions(true)); err == nil {
			t.Fatal("bundle without its simulated root verified")
		}
		req, resp := []byte(`{"model":"builtin"}`), []byte(`{"ok":true}`)
		sr, err := k.SignReceipt(&attest.Receipt{RequestID: "r", Model: "builtin", RequestSHA256: sha256.Sum256(req), ResponseSHA256: sha256.Sum256(resp), Created: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		v := attest.NewVerifier(verifyOptions(true), 8)
		if _, err := v.Receipt(context.Background(), sr, attest.ReceiptCheck{Request: req, Response: resp}, raw, nil); err != nil {
			t.Fatal(err)
		}
		k.Close()
	}
}

// TestFreshBatchQuotes measures fresh mode against the simulated quote
// latency: 200 concurrent fresh receipts.
func TestFreshBatchQuotes(t *testing.T) {
	if testing.Short() {
		t.Skip("quote delay")
	}
	a, err := NewAttester(Config{Root: sharedRoot(t), GPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	k, err := enclave.NewKeeper(context.Background(), enclave.KeeperConfig{Attester: a, Identity: attest.WorkerIdentity{ID: "sim-worker"}})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	before := a.Quotes()
	req, resp := []byte(`{"model":"builtin"}`), []byte(`{"ok":true}`)
	const n = 200
	fresh := make([][]byte, n)
	srs := make([]*attest.SignedReceipt, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := &attest.Receipt{RequestID: "r", Model: "builtin", Nonce: "n", RequestSHA256: sha256.Sum256(req), ResponseSHA256: sha256.Sum256(resp), Created: time.Now()}
			sr, fb, err := k.SignFresh(context.Background(), r)
			if err != nil {
				t.Error(err)
				return
			}
			srs[i], fresh[i] = sr, fb
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	quotes := a.Quotes() - before
	t.Logf("%d concurrent fresh receipts: %d quotes (50 ms each), %v wall", n, quotes, elapsed.Round(time.Millisecond))
	if quotes > 4 {
		t.Fatalf("%d quotes for %d receipts", quotes, n)
	}
	v := attest.NewVerifier(verifyOptions(true), 8)
	for i, sr := range srs {
		if sr == nil {
			t.Fatal("missing receipt")
		}
		if _, err := v.Receipt(context.Background(), sr, attest.ReceiptCheck{Request: req, Response: resp, Nonce: "n"}, k.Current().Raw, fresh[i]); err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
	}
}

// TestGPUCCMode: the simulated GPUs report the configured CC mode ("on" by
// default) in their evidence, and the bundle's claims carry it.
func TestGPUCCMode(t *testing.T) {
	for _, c := range []struct{ cfg, want string }{{"", "on"}, {"on", "on"}, {"devtools", "devtools"}, {"off", "off"}} {
		a, err := NewAttester(Config{Root: sharedRoot(t), GPUs: 2, QuoteDelay: NoDelay, GPUCCMode: c.cfg})
		if err != nil {
			t.Fatal(err)
		}
		evs, err := a.GPUEvidence(context.Background(), [32]byte{1})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.CCMode != c.want {
				t.Fatalf("config %q: evidence cc_mode %q", c.cfg, ev.CCMode)
			}
		}
		k, err := enclave.NewKeeper(context.Background(), enclave.KeeperConfig{Attester: a, Identity: attest.WorkerIdentity{ID: "sim-worker"}})
		if err != nil {
			t.Fatal(err)
		}
		cl, err := attest.VerifyBundle(context.Background(), k.Current().Raw, verifyOptions(true))
		k.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range cl.GPUs {
			if g.CCMode != c.want {
				t.Fatalf("config %q: claims cc_mode %q", c.cfg, g.CCMode)
			}
		}
	}
	for _, bad := range []string{"ON", "unknown", "ppcie"} {
		if _, err := NewAttester(Config{Root: sharedRoot(t), GPUs: 1, GPUCCMode: bad}); err == nil {
			t.Fatalf("GPU CC mode %q accepted", bad)
		}
	}
}
