package attest

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/teegate/teegate/attest/claims"
)

// The fake TEE used by these tests has a format of its own, simple enough to
// read at a glance, so that the tests exercise this package's logic and not
// a quote parser:
//
//	CPU evidence: "FAKECPU1" || report_data(64) || Ed25519(cpuKey, first 72 bytes)
//	GPU report:   "FAKEGPU1" || nonce(32) || Ed25519(gpuKey, first 40 bytes)
//	GPU chain:    the GPU's Ed25519 public key (32 bytes)
//
// The CPU verifier trusts one CPU key, the GPU verifier one GPU key... unless
// the chain names another key it also trusts (a "second machine").

var errFakeSig = errors.New("fake signature invalid")

type fakeMachine struct {
	cpu ed25519.PrivateKey
	gpu ed25519.PrivateKey
}

func seedKey(label string) ed25519.PrivateKey {
	s := sha256.Sum256([]byte(label))
	return ed25519.NewKeyFromSeed(s[:])
}

func newFakeMachine(label string) *fakeMachine {
	return &fakeMachine{cpu: seedKey(label + "/cpu"), gpu: seedKey(label + "/gpu")}
}

func (m *fakeMachine) cpuEvidence(rd [64]byte) []byte {
	b := append([]byte("FAKECPU1"), rd[:]...)
	return append(b, ed25519.Sign(m.cpu, b)...)
}

func (m *fakeMachine) gpuEvidence(nonce [32]byte) GPUEvidence {
	b := append([]byte("FAKEGPU1"), nonce[:]...)
	return GPUEvidence{Arch: "hopper", CCMode: CCModeOn, Report: append(b, ed25519.Sign(m.gpu, b)...), CertChain: append([]byte(nil), m.gpu.Public().(ed25519.PublicKey)...)}
}

// fakeKeys are a worker's public keys with the signing key kept for tests.
type fakeKeys struct {
	sign ed25519.PrivateKey
	hpke []byte
}

func newFakeKeys(label string) fakeKeys {
	s := sha256.Sum256([]byte(label + "/hpke"))
	hk, err := ecdh.X25519().NewPrivateKey(s[:])
	if err != nil {
		panic(err)
	}
	return fakeKeys{sign: seedKey(label + "/sign"), hpke: hk.PublicKey().Bytes()}
}

var testTime = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// testEpoch is the window of the fake bundles: an hour from testTime, five
// minutes' grace.
var testEpoch = EpochWindow{NotBefore: testTime, NotAfter: testTime.Add(time.Hour), Grace: 5 * time.Minute}

// bundle builds a bundle exactly as enclave does: GPUs over the derived
// nonce, then CPU evidence over the report data.
func (m *fakeMachine) bundle(k fakeKeys, nonce [32]byte, nGPU int) *Bundle {
	pub := []byte(k.sign.Public().(ed25519.PublicKey))
	var gpus []GPUEvidence
	for range nGPU {
		gpus = append(gpus, m.gpuEvidence(GPUNonce(pub, nonce)))
	}
	rd := ReportData(pub, k.hpke, GPUEvidenceDigest(gpus), nonce, testEpoch)
	b := &Bundle{
		Version: BundleVersion, TEE: "tdx", CPUEvidence: m.cpuEvidence(rd), GPUs: gpus,
		SigningPub: pub, HPKEPub: k.hpke, EpochNonce: nonce, Created: testTime, Epoch: testEpoch,
		Worker: WorkerIdentity{ID: "worker-1", Models: []string{"builtin"}},
	}
	k.signBundle(b)
	return b
}

// signBundle (re)computes the bundle's self-signature, as the TEE would.
func (k fakeKeys) signBundle(b *Bundle) { b.Signature = ed25519.Sign(k.sign, b.SigningInput()) }

func mustEncode(t testing.TB, b *Bundle) []byte {
	t.Helper()
	raw, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// fakeVerifiers trust the given machines' CPU and GPU keys. For a simulated
// bundle they additionally require the simulated root to be passed through.
func fakeVerifiers(machines ...*fakeMachine) (map[string]CPUVerifier, GPUVerifier) {
	cpu := CPUVerifierFunc(func(ctx context.Context, ev []byte, o CPUOptions) (*claims.Claims, error) {
		if len(ev) != 8+64+64 || !bytes.HasPrefix(ev, []byte("FAKECPU1")) {
			return nil, ErrMalformed
		}
		for _, m := range machines {
			if ed25519.Verify(m.cpu.Public().(ed25519.PublicKey), ev[:72], ev[72:]) {
				return &claims.Claims{
					TEE: "tdx", Measurements: map[string]string{"mrtd": "00"},
					ReportData: hex.EncodeToString(ev[8:72]),
					Sources:    map[string]string{"mrtd": "fake.quote"},
				}, nil
			}
		}
		return nil, errFakeSig
	})
	gpu := GPUVerifierFunc(func(ctx context.Context, ev GPUEvidence, o GPUOptions) (*claims.GPU, error) {
		if len(ev.Report) != 8+32+64 || !bytes.HasPrefix(ev.Report, []byte("FAKEGPU1")) || len(ev.CertChain) != 32 {
			return nil, ErrMalformed
		}
		trusted := false
		for _, m := range machines {
			trusted = trusted || bytes.Equal(ev.CertChain, m.gpu.Public().(ed25519.PublicKey))
		}
		if !trusted || !ed25519.Verify(ed25519.PublicKey(ev.CertChain), ev.Report[:40], ev.Report[40:]) {
			return nil, errFakeSig
		}
		return &claims.GPU{
			Arch: ev.Arch, CCMode: "on", SignatureValid: true, ChainValid: true,
			NonceMatched:        bytes.Equal(ev.Report[8:40], o.ExpectedNonce[:]),
			MeasurementsMatched: "not_checked",
		}, nil
	})
	return map[string]CPUVerifier{"tdx": cpu}, gpu
}

func testOpts(machines ...*fakeMachine) VerifyOptions {
	cpu, gpu := fakeVerifiers(machines...)
	return VerifyOptions{CPU: cpu, GPU: gpu, Now: func() time.Time { return testTime.Add(time.Minute) }}
}

// simRootDER makes a self-signed ECDSA P-384 certificate like the simulated
// TEE's root.
func simRootDER(t testing.TB) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "teegate SIMULATED root"},
		NotBefore: testTime.Add(-time.Hour), NotAfter: testTime.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
