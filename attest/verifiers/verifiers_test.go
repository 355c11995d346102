package verifiers_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/verifiers"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/policies"
)

var (
	rootOnce sync.Once
	root     *sim.Root
	rootErr  error
)

func simRoot(t testing.TB) *sim.Root {
	t.Helper()
	rootOnce.Do(func() { root, rootErr = sim.NewRoot() })
	if rootErr != nil {
		t.Fatal(rootErr)
	}
	return root
}

// simBundle runs the binding of docs/attestation.md §3 with the simulated
// TEE, the way enclave does, but keeps the signing key so that tests can
// re-sign altered bundles. mutate, when set, changes the GPU evidence before
// the CPU quote commits to it (to produce a bundle of an older producer).
func simBundle(t testing.TB, ccMode string, gpus int, mutate func([]attest.GPUEvidence)) ([]byte, ed25519.PrivateKey) {
	t.Helper()
	ctx := context.Background()
	a, err := sim.NewAttester(sim.Config{Root: simRoot(t), GPUs: gpus, QuoteDelay: sim.NoDelay, GPUCCMode: ccMode})
	if err != nil {
		t.Fatal(err)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hpke := make([]byte, attest.HPKEKeySize)
	var nonce [32]byte
	rand.Read(hpke)
	rand.Read(nonce[:])
	evs, err := a.GPUEvidence(ctx, attest.GPUNonce(pub, nonce))
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(evs)
	}
	win := attest.NewEpochWindow(time.Now(), time.Hour, 5*time.Minute)
	cpu, err := a.CPUEvidence(ctx, attest.ReportData(pub, hpke, attest.GPUEvidenceDigest(evs), nonce, win))
	if err != nil {
		t.Fatal(err)
	}
	b := &attest.Bundle{
		Version: attest.BundleVersion, TEE: cpu.Format, CPUEvidence: cpu.Raw, GPUs: evs,
		SigningPub: pub, HPKEPub: hpke, EpochNonce: nonce, Created: win.NotBefore, Epoch: win,
		Worker: attest.WorkerIdentity{ID: "sim-worker"}, SimulatedRoots: cpu.SimulatedRoots,
	}
	b.Signature = ed25519.Sign(key, b.SigningInput())
	raw, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return raw, key
}

func opts() attest.VerifyOptions { return verifiers.Options(verifiers.Config{AllowSimulated: true}) }

// TestCCModeReachesClaimsAndPolicy: the mode the TEE reports is what the
// claims say, and the production policy denies everything but "on" with a
// reason naming the mode.
func TestCCModeReachesClaimsAndPolicy(t *testing.T) {
	prod, err := policies.Builtin("production")
	if err != nil {
		t.Fatal(err)
	}
	unreported := func(evs []attest.GPUEvidence) {
		for i := range evs {
			evs[i].CCMode = ""
		}
	}
	for _, c := range []struct {
		name   string
		mode   string
		mutate func([]attest.GPUEvidence)
		want   string
		reason string // substring of a production deny reason; "" none about CC
	}{
		{"default", "", nil, "on", ""},
		{"on", "on", nil, "on", ""},
		{"devtools", "devtools", nil, "devtools", "GPU 0: confidential computing mode is devtools"},
		{"off", "off", nil, "off", `GPU 0: confidential computing mode is "off"`},
		{"unreported", "", unreported, "unknown", `GPU 0: confidential computing mode is "unknown"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw, _ := simBundle(t, c.mode, 1, c.mutate)
			cl, err := attest.VerifyBundle(context.Background(), raw, opts())
			if err != nil {
				t.Fatal(err)
			}
			if len(cl.GPUs) != 1 || cl.GPUs[0].CCMode != c.want {
				t.Fatalf("claims GPUs %+v, want cc_mode %q", cl.GPUs, c.want)
			}
			if cl.Sources["gpu_cc_mode"] == "" {
				t.Fatal("no source for gpu_cc_mode")
			}
			d, err := prod.Eval(context.Background(), cl, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow {
				t.Fatal("production allowed simulated evidence")
			}
			var cc []string
			for _, r := range d.Reasons {
				if strings.Contains(r, "confidential computing") {
					cc = append(cc, r)
				}
			}
			switch {
			case c.reason == "" && len(cc) > 0:
				t.Fatalf("CC reasons %q for mode %q", cc, c.want)
			case c.reason != "" && (len(cc) != 1 || !strings.Contains(cc[0], c.reason)):
				t.Fatalf("CC reasons %q, want one containing %q", cc, c.reason)
			}
		})
	}
}

// TestCCModeFlipFails: cc_mode is covered twice, by the bundle signature
// and, through the GPU evidence digest, by the CPU quote.
func TestCCModeFlipFails(t *testing.T) {
	raw, key := simBundle(t, "on", 2, nil)
	if _, err := attest.VerifyBundle(context.Background(), raw, opts()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		gpu    int
		mode   string
		resign bool
		want   error
	}{
		{"devtools, not re-signed", 0, "devtools", false, attest.ErrBundleSignature},
		{"devtools, re-signed", 1, "devtools", true, attest.ErrBindingReportData},
		{"removed, re-signed", 0, "", true, attest.ErrBindingReportData},
		{"off, re-signed", 1, "off", true, attest.ErrBindingReportData},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := attest.DecodeBundle(raw)
			if err != nil {
				t.Fatal(err)
			}
			b.GPUs[c.gpu].CCMode = c.mode
			if c.resign {
				b.Signature = ed25519.Sign(key, b.SigningInput())
			}
			bad, err := b.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := attest.VerifyBundle(context.Background(), bad, opts()); !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
	// A mode outside the schema does not decode.
	b, _ := attest.DecodeBundle(raw)
	b.GPUs[0].CCMode = "maybe"
	if _, err := b.Encode(); !errors.Is(err, attest.ErrMalformed) {
		t.Fatalf("cc_mode maybe: %v", err)
	}
	bad := []byte(strings.Replace(string(raw), `"cc_mode":"on"`, `"cc_mode":"On"`, 1))
	if _, err := attest.VerifyBundle(context.Background(), bad, opts()); !errors.Is(err, attest.ErrMalformed) {
		t.Fatalf("cc_mode On: %v", err)
	}
}
