package nvgpu

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/attest/nvidia"
)

// timeGPU lies inside the validity of the nvtrust H100 chain.
var timeGPU = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

type vector struct {
	report []byte
	chain  []byte
	nonce  [32]byte
}

func loadVector(t testing.TB) vector {
	t.Helper()
	h, err := os.ReadFile("testdata/hopperAttestationReport.hex")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := hex.DecodeString(strings.TrimSpace(string(h)))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := os.ReadFile("testdata/hopperCertChain.pem")
	if err != nil {
		t.Fatal(err)
	}
	r, err := nvidia.ParseReport(rep)
	if err != nil {
		t.Fatal(err)
	}
	return vector{report: rep, chain: chain, nonce: r.Nonce()}
}

func deviceRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile("testdata/nvidia_device_identity_ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

// fakeNVML replays the real H100 report and chain. Like NVML it fails the
// test if anything is called after a failed Init.
type fakeNVML struct {
	t        testing.TB
	initErr  error
	initFail bool
	up       bool
	calls    []string
	state    CCState
	stateErr error
	devs     []*fakeDevice
}

type fakeDevice struct {
	v        vector
	arch     string
	report   []byte // when set, returned for any nonce
	repErr   error
	chainErr error
}

func newFake(t testing.TB, n int) *fakeNVML {
	v := loadVector(t)
	f := &fakeNVML{t: t, state: CCState{Enabled: true, Environment: EnvironmentProduction, GPUsReady: true}}
	for range n {
		f.devs = append(f.devs, &fakeDevice{v: v, arch: "hopper"})
	}
	return f
}

func (f *fakeNVML) call(name string) {
	f.calls = append(f.calls, name)
	if f.initFail && name != "Init" {
		f.t.Errorf("NVML %s called after a failed Init: NVML would abort the process", name)
	}
	if name != "Init" && !f.up {
		f.t.Errorf("NVML %s called without Init", name)
	}
}

func (f *fakeNVML) Init() error {
	f.call("Init")
	if f.initErr != nil {
		f.initFail = true
		return f.initErr
	}
	f.up = true
	return nil
}

func (f *fakeNVML) Shutdown() error { f.call("Shutdown"); f.up = false; return nil }

func (f *fakeNVML) DriverVersion() (string, error) { f.call("DriverVersion"); return "550.90.07", nil }

func (f *fakeNVML) CCState() (CCState, error) { f.call("CCState"); return f.state, f.stateErr }

func (f *fakeNVML) DeviceCount() (int, error) { f.call("DeviceCount"); return len(f.devs), nil }

func (f *fakeNVML) Device(i int) (nvmlDevice, error) {
	f.call("Device")
	if i < 0 || i >= len(f.devs) {
		return nil, &NVMLError{Code: 2, Text: "ERROR_INVALID_ARGUMENT"}
	}
	return f.devs[i], nil
}

func (d *fakeDevice) Name() (string, error) { return "NVIDIA H100 80GB HBM3", nil }
func (d *fakeDevice) UUID() (string, error) { return "GPU-00000000-0000-0000-0000-000000000000", nil }
func (d *fakeDevice) Arch() (string, error) { return d.arch, nil }

// AttestationReport answers like a GPU holding one captured report: the
// GPU signs whatever nonce it is given, so only its own nonce reproduces
// the captured bytes; any other nonce is refused here.
func (d *fakeDevice) AttestationReport(nonce [32]byte) ([]byte, error) {
	if d.repErr != nil {
		return nil, d.repErr
	}
	if d.report != nil {
		return d.report, nil
	}
	if nonce != d.v.nonce {
		return nil, &NVMLError{Code: 2, Text: "fake: no report captured for this nonce"}
	}
	return bytes.Clone(d.v.report), nil
}

func (d *fakeDevice) AttestationCertChain() ([]byte, error) {
	if d.chainErr != nil {
		return nil, d.chainErr
	}
	return bytes.Clone(d.v.chain), nil
}

func TestEvidenceVerifies(t *testing.T) {
	f := newFake(t, 2)
	g, err := open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	nonce := f.devs[0].v.nonce
	evs, err := g.GPUEvidence(context.Background(), nonce)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("%d GPUs, want 2", len(evs))
	}
	for i, ev := range evs {
		if ev.Arch != "hopper" || ev.CCMode != "on" {
			t.Fatalf("arch %q cc_mode %q", ev.Arch, ev.CCMode)
		}
		c, err := nvidia.Verify(context.Background(), nvidia.Evidence{
			Report: ev.Report, Chain: ev.CertChain, ExpectedNonce: nonce[:], Arch: "HOPPER",
		}, nvidia.Options{Roots: deviceRoots(t), Now: timeGPU, CCMode: g.CCState().Mode()})
		if err != nil {
			t.Fatalf("GPU %d evidence does not verify: %v", i, err)
		}
		if !c.NonceMatched || c.CCMode != "on" || c.DriverVersion != "550.90.07" {
			t.Fatalf("GPU %d claims %+v", i, c)
		}
	}
}

// TestEvidenceCarriesCCMode: every GPU's evidence states the mode read just
// before its report, so a switch to devtools after Open shows in the next
// bundle (where production policies deny it).
func TestEvidenceCarriesCCMode(t *testing.T) {
	f := newFake(t, 2)
	g, err := open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	nonce := f.devs[0].v.nonce
	for _, c := range []struct {
		devTools bool
		want     string
	}{{false, "on"}, {true, "devtools"}, {false, "on"}} {
		f.state.DevTools = c.devTools
		evs, err := g.GPUEvidence(context.Background(), nonce)
		if err != nil {
			t.Fatal(err)
		}
		for i, ev := range evs {
			if ev.CCMode != c.want {
				t.Fatalf("devtools %v: GPU %d cc_mode %q, want %q", c.devTools, i, ev.CCMode, c.want)
			}
		}
	}
}

func TestInitFailureStopsAtInit(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"no driver", &NVMLError{Code: codeLibraryNotFound, Text: "ERROR_LIBRARY_NOT_FOUND"}, ErrNoDriver},
		{"driver not loaded", &NVMLError{Code: 9, Text: "ERROR_DRIVER_NOT_LOADED"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFake(t, 1)
			f.initErr = c.err
			_, err := open(f)
			var ne *NVMLError
			if !errors.As(err, &ne) || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("open: %v, want NVMLError %v", err, c.want)
			}
			if _, err := probe(context.Background(), f); !errors.Is(err, c.err) {
				t.Fatalf("probe: %v", err)
			}
			var out bytes.Buffer
			if err := writeProbe(&out, ProbeResult{}, err); err == nil || !strings.Contains(out.String(), "not available") {
				t.Fatalf("writeProbe: %v %q", err, out.String())
			}
			// Init only, twice (open, probe): nothing after it.
			if strings.Join(f.calls, ",") != "Init,Init" {
				t.Fatalf("calls %v", f.calls)
			}
		})
	}
}

func TestOpenRefusals(t *testing.T) {
	for _, c := range []struct {
		name   string
		mutate func(*fakeNVML)
		want   error
	}{
		{"cc off", func(f *fakeNVML) { f.state.Enabled = false }, ErrCCOff},
		{"cc not supported", func(f *fakeNVML) { f.stateErr = fmt.Errorf("x: %w", ErrNotSupported) }, ErrNotSupported},
		{"cc state error", func(f *fakeNVML) { f.stateErr = &NVMLError{Code: 4, Text: "ERROR_NO_PERMISSION"} }, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFake(t, 1)
			c.mutate(f)
			_, err := open(f)
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("open: %v, want %v", err, c.want)
			}
			if f.up || f.calls[len(f.calls)-1] != "Shutdown" {
				t.Fatalf("NVML left initialized: calls %v", f.calls)
			}
		})
	}
}

func TestEvidenceErrors(t *testing.T) {
	v := loadVector(t)
	other := v.nonce
	other[31] ^= 1
	notSupported := &NVMLError{Code: codeNotSupported, Text: "ERROR_NOT_SUPPORTED"}
	for _, c := range []struct {
		name   string
		mutate func(*fakeNVML)
		nonce  [32]byte
		want   error
	}{
		{"GPU ignores the nonce", func(f *fakeNVML) { f.devs[0].report = v.report }, other, ErrNonceMismatch},
		{"truncated report", func(f *fakeNVML) { f.devs[0].report = v.report[:100] }, v.nonce, ErrMalformedReport},
		{"empty report", func(f *fakeNVML) { f.devs[0].report = []byte{} }, v.nonce, ErrMalformedReport},
		{"report not supported", func(f *fakeNVML) { f.devs[1].repErr = notSupported }, v.nonce, ErrNotSupported},
		{"chain not supported", func(f *fakeNVML) { f.devs[0].chainErr = notSupported }, v.nonce, ErrNotSupported},
		{"no GPUs", func(f *fakeNVML) { f.devs = nil }, v.nonce, ErrNoGPUs},
		{"cc turned off", func(f *fakeNVML) { f.state.Enabled = false }, v.nonce, ErrCCOff},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFake(t, 2)
			g, err := open(f)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			c.mutate(f)
			if _, err := g.GPUEvidence(context.Background(), c.nonce); !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
}

func TestStateCancelClose(t *testing.T) {
	f := newFake(t, 1)
	f.state.DevTools = true
	g, err := open(f)
	if err != nil {
		t.Fatal(err)
	}
	if m := g.CCState().Mode(); m != "devtools" {
		t.Fatalf("mode %q, want devtools", m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.GPUEvidence(ctx, f.devs[0].v.nonce); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if err := g.Close(); err != nil || f.up {
		t.Fatalf("close: %v, up %v", err, f.up)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.GPUEvidence(context.Background(), f.devs[0].v.nonce); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
	if (CCState{}).Mode() != "off" || (CCState{Enabled: true}).Mode() != "on" {
		t.Fatal("Mode")
	}
}

func TestProbe(t *testing.T) {
	f := newFake(t, 2)
	f.state.DevTools = true
	res, err := probe(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if f.up {
		t.Fatal("probe left NVML initialized")
	}
	var out bytes.Buffer
	if err := writeProbe(&out, res, nil); err != nil {
		t.Fatal(err)
	}
	want := `nvidia driver: 550.90.07
cc mode:       devtools (environment prod)
devtools:      on
gpus ready:    yes
gpus:          2
  gpu 0: NVIDIA H100 80GB HBM3, hopper, GPU-00000000-0000-0000-0000-000000000000
  gpu 1: NVIDIA H100 80GB HBM3, hopper, GPU-00000000-0000-0000-0000-000000000000
`
	if out.String() != want {
		t.Fatalf("probe output:\n%s\nwant:\n%s", out.String(), want)
	}

	f = newFake(t, 1)
	f.stateErr = &NVMLError{Code: codeNotSupported, Text: "ERROR_NOT_SUPPORTED"}
	res, err = probe(context.Background(), f)
	if err != nil || res.CCSupported || res.CC.Mode() != "off" {
		t.Fatalf("probe without CC support: %+v %v", res, err)
	}
	out.Reset()
	writeProbe(&out, res, nil)
	if !strings.Contains(out.String(), "cc mode:       not supported") {
		t.Fatalf("output %q", out.String())
	}
}

// TestRealBindingHere runs the real NVML binding in this process: on a
// machine without the driver it must fail cleanly with ErrNoDriver (or
// ErrUnsupported in a build without cgo); with a driver it must not crash.
// real_test.go runs the same in a child process as well.
func TestRealBindingHere(t *testing.T) {
	res, err := Probe(context.Background())
	switch {
	case errors.Is(err, ErrNoDriver), errors.Is(err, ErrUnsupported):
		t.Logf("no NVML here: %v", err)
		if _, err := Open(context.Background()); !errors.Is(err, ErrNoDriver) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("Open: %v", err)
		}
	case err != nil:
		t.Logf("NVML probe failed: %v", err)
	default:
		t.Logf("NVML probe: %+v", res)
	}
}

func FuzzCheckReport(f *testing.F) {
	v := loadVector(f)
	f.Add(v.report, v.nonce[:])
	f.Add(v.report[:64], make([]byte, 32))
	f.Fuzz(func(t *testing.T, rep, nonce []byte) {
		var n [32]byte
		copy(n[:], nonce)
		if err := checkReport(rep, n); err == nil {
			r, perr := nvidia.ParseReport(rep)
			if perr != nil || r.Nonce() != n {
				t.Fatal("accepted a report over another nonce")
			}
		}
	})
}

func BenchmarkGPUEvidenceFake(b *testing.B) {
	f := newFake(b, 1)
	g, err := open(f)
	if err != nil {
		b.Fatal(err)
	}
	nonce := f.devs[0].v.nonce
	b.ReportAllocs()
	for b.Loop() {
		f.calls = f.calls[:0]
		if _, err := g.GPUEvidence(context.Background(), nonce); err != nil {
			b.Fatal(err)
		}
	}
}
