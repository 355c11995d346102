package nvidia

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestVerifyRealVectors(t *testing.T) {
	roots := deviceRoots(t)
	for _, v := range realVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			g, err := Verify(context.Background(), Evidence{Report: v.report, Chain: v.chain, ExpectedNonce: v.nonce},
				Options{Roots: roots, Now: timeGPU})
			if err != nil {
				t.Fatal(err)
			}
			r, _ := ParseReport(v.report)
			if g.Arch != v.arch || g.DriverVersion != v.driver || g.VBIOSVersion != v.vbios {
				t.Errorf("arch/driver/vbios = %q %q %q, want %q %q %q", g.Arch, g.DriverVersion, g.VBIOSVersion, v.arch, v.driver, v.vbios)
			}
			if !g.SignatureValid || !g.ChainValid || !g.NonceMatched || g.CCMode != "on" || g.MeasurementsMatched != MeasurementsNotChecked {
				t.Errorf("claims = %+v", g)
			}
			if len(g.Measurements) != len(r.Blocks) {
				t.Errorf("%d measurements, want %d", len(g.Measurements), len(r.Blocks))
			}
			for _, b := range r.Blocks {
				if g.Measurements[strconv.Itoa(int(b.Index))] != hex.EncodeToString(b.Value) {
					t.Errorf("measurement %d differs", b.Index)
				}
			}
			certs, err := ParseCertChain(v.chain)
			if err != nil {
				t.Fatal(err)
			}
			leafFWID, err := certFWID(certs[0], archFromCert(certs[0]))
			if err != nil {
				t.Fatal(err)
			}
			if g.FWID != hex.EncodeToString(r.FWID()) {
				t.Errorf("FWID claim %s, report %x", g.FWID, r.FWID())
			}
			if r.FWID() != nil && !bytes.Equal(r.FWID(), leafFWID) {
				t.Errorf("report FWID %x, leaf %x", r.FWID(), leafFWID)
			}
			if v.arch != ArchNVSwitch && len(g.FWID) != 96 {
				t.Errorf("GPU without a 48-byte FWID: %q", g.FWID)
			}
		})
	}
}

// TestSignedRegionFlips flips every byte of the signed region (and of the
// signature) of a real report: each must fail, with ErrReportSignature
// wherever the structure still parses.
func TestSignedRegionFlips(t *testing.T) {
	v := realVectors(t)[2] // the NVSwitch report: smallest
	roots := deviceRoots(t)
	cache := NewChainCache(4)
	opts := Options{Roots: roots, Now: timeGPU, ChainCache: cache}
	if _, err := Verify(context.Background(), Evidence{Report: v.report, Chain: v.chain, ExpectedNonce: v.nonce}, opts); err != nil {
		t.Fatal(err)
	}
	r, _ := ParseReport(v.report)
	// Bytes whose flip keeps the structure: request nonce, measurement
	// values, responder nonce, opaque values, signature. Those must give
	// exactly ErrReportSignature.
	valueByte := make([]bool, len(v.report))
	mark := func(off, n int) {
		for i := off; i < off+n; i++ {
			valueByte[i] = true
		}
	}
	mark(4, NonceSize)
	off := RequestLength + 8
	for _, b := range r.Blocks {
		mark(off+blockHeaderLength+dmtfHeaderLength, len(b.Value))
		off += blockHeaderLength + dmtfHeaderLength + len(b.Value)
	}
	mark(off, NonceSize)
	off += NonceSize + 2
	for _, f := range r.Opaque {
		mark(off+4, len(f.Value))
		off += 4 + len(f.Value)
	}
	mark(len(v.report)-SignatureSize, SignatureSize)
	sigErrs, fmtErrs := 0, 0
	step := 1
	if testing.Short() {
		step = 7
	}
	for i := 0; i < len(v.report); i += step {
		b := bytes.Clone(v.report)
		b[i] ^= 0x01
		_, err := Verify(context.Background(), Evidence{Report: b, Chain: v.chain}, opts)
		switch {
		case err == nil:
			t.Fatalf("flip at %d verified", i)
		case errors.Is(err, ErrReportSignature):
			sigErrs++
		case valueByte[i]:
			t.Fatalf("flip at %d (value byte): %v, want ErrReportSignature", i, err)
		case errors.Is(err, ErrReportFormat):
			fmtErrs++
		default:
			t.Fatalf("flip at %d: unexpected %v", i, err)
		}
	}
	t.Logf("%d flips: %d ErrReportSignature, %d ErrReportFormat", len(v.report), sigErrs, fmtErrs)
}

func TestSwitchInvalidSignatureSample(t *testing.T) {
	_, err := Verify(context.Background(), Evidence{Report: readHex(t, "sdk_switch_report_invalid_signature.hex"), Chain: readTestdata(t, "sdk_switch_chain.pem")},
		Options{Roots: deviceRoots(t), Now: timeGPU})
	if !errors.Is(err, ErrReportSignature) {
		t.Errorf("Verify = %v, want ErrReportSignature", err)
	}
}

func TestVerifyNegative(t *testing.T) {
	vs := realVectors(t)
	hop, sdk := vs[0], vs[1]
	roots := deviceRoots(t)
	chainCerts := strings.SplitAfter(string(hop.chain), "-----END CERTIFICATE-----")
	sdkCerts := strings.SplitAfter(string(sdk.chain), "-----END CERTIFICATE-----")
	wrongNonce := bytes.Clone(hop.nonce)
	wrongNonce[31] ^= 1
	cases := []struct {
		name string
		ev   Evidence
		opts Options
		want []error
	}{
		{"nonce flipped", Evidence{Report: hop.report, Chain: hop.chain, ExpectedNonce: wrongNonce}, Options{Roots: roots, Now: timeGPU}, []error{ErrNonceMismatch}},
		{"nonce short", Evidence{Report: hop.report, Chain: hop.chain, ExpectedNonce: hop.nonce[:31]}, Options{Roots: roots, Now: timeGPU}, []error{ErrNonceMismatch}},
		{"other GPU's chain", Evidence{Report: hop.report, Chain: sdk.chain}, Options{Roots: roots, Now: timeGPU}, []error{ErrReportSignature}},
		{"untrusted root", Evidence{Report: hop.report, Chain: hop.chain}, Options{Roots: rimRoots(t), Now: timeGPU}, []error{ErrCertChain}},
		{"no roots", Evidence{Report: hop.report, Chain: hop.chain}, Options{Now: timeGPU}, []error{ErrCertChain}},
		{"before validity", Evidence{Report: hop.report, Chain: hop.chain}, Options{Roots: roots, Now: time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)}, []error{ErrCertChain, ErrCertExpired}},
		{"intermediate missing", Evidence{Report: hop.report, Chain: []byte(chainCerts[0] + chainCerts[2] + chainCerts[3] + chainCerts[4])}, Options{Roots: roots, Now: timeGPU}, []error{ErrCertChain}},
		{"extra certificate", Evidence{Report: hop.report, Chain: []byte(strings.Join(chainCerts, "") + "\n" + sdkCerts[1])}, Options{Roots: roots, Now: timeGPU}, []error{ErrCertChain}},
		{"leaf only", Evidence{Report: hop.report, Chain: []byte(chainCerts[0])}, Options{Roots: roots, Now: timeGPU}, []error{ErrCertChain}},
		{"chain not PEM", Evidence{Report: hop.report, Chain: []byte("garbage")}, Options{Roots: roots, Now: timeGPU}, []error{ErrCertFormat}},
		{"chain trailing garbage", Evidence{Report: hop.report, Chain: append(bytes.Clone(hop.chain), "x"...)}, Options{Roots: roots, Now: timeGPU}, []error{ErrCertFormat}},
		{"report truncated", Evidence{Report: hop.report[:500], Chain: hop.chain}, Options{Roots: roots, Now: timeGPU}, []error{ErrReportFormat}},
		{"arch hint wrong", Evidence{Report: hop.report, Chain: hop.chain, Arch: "BLACKWELL"}, Options{Roots: roots, Now: timeGPU}, []error{ErrArchMismatch}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Verify(context.Background(), tc.ev, tc.opts)
			if g != nil {
				t.Errorf("claims returned on failure: %+v", g)
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("Verify = %v, want %v", err, w)
				}
			}
		})
	}
	t.Run("arch hint right", func(t *testing.T) {
		if _, err := Verify(context.Background(), Evidence{Report: hop.report, Chain: hop.chain, Arch: "HOPPER"}, Options{Roots: roots, Now: timeGPU}); err != nil {
			t.Error(err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Verify(ctx, Evidence{Report: hop.report, Chain: hop.chain}, Options{Roots: roots, Now: timeGPU}); !errors.Is(err, context.Canceled) {
			t.Errorf("Verify = %v, want context.Canceled", err)
		}
	})
	t.Run("cc mode passed through", func(t *testing.T) {
		g, err := Verify(context.Background(), Evidence{Report: hop.report, Chain: hop.chain}, Options{Roots: roots, Now: timeGPU, CCMode: "devtools"})
		if err != nil || g.CCMode != "devtools" || g.NonceMatched {
			t.Errorf("Verify = %+v, %v", g, err)
		}
	})
}

func TestChainCache(t *testing.T) {
	vs := realVectors(t)
	roots := deviceRoots(t)
	cache := NewChainCache(2)
	verify := func(v vector, p *x509.CertPool, now time.Time) error {
		_, err := Verify(context.Background(), Evidence{Report: v.report, Chain: v.chain}, Options{Roots: p, Now: now, ChainCache: cache})
		return err
	}
	r := roots
	for _, v := range vs[:2] {
		if err := verify(v, r, timeGPU); err != nil {
			t.Fatal(err)
		}
	}
	if cache.Len() != 2 {
		t.Fatalf("Len = %d, want 2", cache.Len())
	}
	// A cached chain is still bound to its signature check.
	bad := bytes.Clone(vs[0].report)
	bad[10] ^= 1 // a request nonce byte
	if _, err := Verify(context.Background(), Evidence{Report: bad, Chain: vs[0].chain}, Options{Roots: roots, Now: timeGPU, ChainCache: cache}); !errors.Is(err, ErrReportSignature) {
		t.Errorf("cached chain, flipped report: %v", err)
	}
	// Another root pool does not reuse the entry.
	if err := verify(vs[0], rimRoots(t), timeGPU); !errors.Is(err, ErrCertChain) {
		t.Errorf("cached chain, other roots: %v, want ErrCertChain", err)
	}
	// Outside the validity window the entry is not used.
	if err := verify(vs[0], r, time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)); !errors.Is(err, ErrCertExpired) {
		t.Errorf("cached chain, before validity: %v, want ErrCertExpired", err)
	}
	// Eviction keeps the bound.
	if err := verify(vs[2], r, timeGPU); err != nil {
		t.Fatal(err)
	}
	if cache.Len() != 2 {
		t.Errorf("Len = %d after eviction, want 2", cache.Len())
	}
}

// TestVerifyConcurrent shares one cache and one RIM between goroutines
// (run with -race).
func TestVerifyConcurrent(t *testing.T) {
	sw := realVectors(t)[2]
	opts := Options{Roots: deviceRoots(t), RIMRoots: rimRoots(t), Now: timeSwitchRIM, ChainCache: NewChainCache(4),
		RIMs: []*RIM{mustRIM(t, "switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml")}}
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			g, err := Verify(context.Background(), Evidence{Report: sw.report, Chain: sw.chain, ExpectedNonce: sw.nonce}, opts)
			if err == nil && g.MeasurementsMatched != MeasurementsMatch {
				err = errors.New("measurements not matched: " + g.MeasurementsMatched)
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
