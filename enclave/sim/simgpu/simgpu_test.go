package simgpu_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/teegate/teegate/attest/nvidia"
	"github.com/teegate/teegate/enclave/sim/simgpu"
)

var now = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

func newGPU(t testing.TB, opts ...simgpu.Option) (*simgpu.GPU, *x509.CertPool) {
	t.Helper()
	root, key, err := simgpu.NewRoot(nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := simgpu.NewGPU(root, key, opts...)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	p.AddCert(root)
	return g, p
}

func nvidiaRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile("../../../attest/nvidia/testdata/nvidia_device_identity_ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatal("no NVIDIA root")
	}
	return p
}

func TestSimulatedReportVerifies(t *testing.T) {
	g, roots := newGPU(t)
	nonce := [32]byte{1, 2, 3}
	rep, chain, err := g.Report(nonce)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := nvidia.ParseCertChain(chain)
	if err != nil || len(certs) != 5 {
		t.Fatalf("chain: %d certificates, %v", len(certs), err)
	}
	c, err := nvidia.Verify(context.Background(), nvidia.Evidence{Report: rep, Chain: chain, ExpectedNonce: nonce[:]}, nvidia.Options{Roots: roots, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	fwid := sha512.Sum384([]byte("teegate/simgpu/firmware"))
	if c.Arch != nvidia.ArchSimulated || c.DriverVersion != simgpu.DefaultDriverVersion || c.VBIOSVersion != simgpu.DefaultVBIOSVersion ||
		!c.SignatureValid || !c.ChainValid || !c.NonceMatched || c.FWID != hex.EncodeToString(fwid[:]) ||
		len(c.Measurements) != simgpu.DefaultBlocks || c.MeasurementsMatched != nvidia.MeasurementsNotChecked {
		t.Errorf("claims = %+v", c)
	}
	// Each report is fresh: the responder nonce and the signature differ.
	rep2, _, err := g.Report(nonce)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(rep, rep2) {
		t.Error("two reports are identical")
	}
}

func TestSimulatedReportRejected(t *testing.T) {
	g, roots := newGPU(t)
	nonce := [32]byte{9}
	rep, chain, err := g.Report(nonce)
	if err != nil {
		t.Fatal(err)
	}
	other, otherRoots := newGPU(t)
	_, otherChain, _ := other.Report(nonce)
	badFWID, badRoots := newGPU(t, simgpu.WithOpaqueFWID(bytes.Repeat([]byte{7}, 48)))
	badRep, badChain, err := badFWID.Report(nonce)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(rep)
	flipped[60] ^= 1 // inside the first measurement value
	cases := []struct {
		name  string
		ev    nvidia.Evidence
		roots *x509.CertPool
		want  error
	}{
		{"NVIDIA root", nvidia.Evidence{Report: rep, Chain: chain}, nvidiaRoots(t), nvidia.ErrCertChain},
		{"another simulated root", nvidia.Evidence{Report: rep, Chain: chain}, otherRoots, nvidia.ErrCertChain},
		{"another GPU's chain", nvidia.Evidence{Report: rep, Chain: otherChain}, roots, nvidia.ErrCertChain},
		{"wrong nonce", nvidia.Evidence{Report: rep, Chain: chain, ExpectedNonce: make([]byte, 32)}, roots, nvidia.ErrNonceMismatch},
		{"flipped byte", nvidia.Evidence{Report: flipped, Chain: chain}, roots, nvidia.ErrReportSignature},
		{"FWID differs from certificate", nvidia.Evidence{Report: badRep, Chain: badChain}, badRoots, nvidia.ErrFWIDMismatch},
		{"claims to be a Hopper", nvidia.Evidence{Report: rep, Chain: chain, Arch: "HOPPER"}, roots, nvidia.ErrArchMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := nvidia.Verify(context.Background(), tc.ev, nvidia.Options{Roots: tc.roots, Now: now}); !errors.Is(err, tc.want) {
				t.Errorf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	m := map[int][]byte{1: bytes.Repeat([]byte{0xaa}, 48), 5: bytes.Repeat([]byte{0xbb}, 48)}
	g, roots := newGPU(t, simgpu.WithDriverVersion("1.2.3-sim"), simgpu.WithVBIOSVersion("sim-vbios"), simgpu.WithMeasurements(m))
	rep, chain, err := g.Report([32]byte{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := nvidia.Verify(context.Background(), nvidia.Evidence{Report: rep, Chain: chain}, nvidia.Options{Roots: roots, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if c.DriverVersion != "1.2.3-sim" || c.VBIOSVersion != "sim-vbios" || len(c.Measurements) != 2 || c.Measurements["5"] != hex.EncodeToString(m[5]) {
		t.Errorf("claims = %+v", c)
	}
	if _, err := simgpu.NewGPU(nil, nil); err == nil {
		t.Error("NewGPU without a root succeeded")
	}
	root, key, _ := simgpu.NewRoot(nil)
	if _, err := simgpu.NewGPU(root, key, simgpu.WithMeasurements(map[int][]byte{0: {1}})); err == nil {
		t.Error("block index 0 accepted")
	}
}

func BenchmarkReport(b *testing.B) {
	g, _ := newGPU(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := g.Report([32]byte{}); err != nil {
			b.Fatal(err)
		}
	}
}
