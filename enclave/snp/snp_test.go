package snp

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify"

	asnp "github.com/teegate/teegate/attest/snp"
	"github.com/teegate/teegate/enclave"
)

var verifyAt = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replay is a seam fake standing for the SEV guest: it holds the real Milan
// report and answers only requests for the report data that report carries,
// as firmware would.
func replay(t testing.TB) (source, [64]byte) {
	t.Helper()
	raw := read(t, "attestation_milan.bin")
	var rd [64]byte
	copy(rd[:], raw[0x50:0x90]) // REPORT_DATA (AMD 56860, Table 23)
	return source{name: "replay", report: func(in [64]byte) ([]byte, error) {
		if in != rd {
			return nil, fmt.Errorf("replay: no report for %x: %w", in[:4], syscall.EINVAL)
		}
		return bytes.Clone(raw), nil
	}}, rd
}

func TestRealReportVerifies(t *testing.T) {
	src, rd := replay(t)
	r := newReporter(src, 0)
	defer r.Close()
	ev, err := r.CPUEvidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Format != enclave.KindSEVSNP || r.Kind() != "sev-snp" {
		t.Fatalf("format %q kind %q", ev.Format, r.Kind())
	}
	c, err := asnp.Verify(context.Background(), ev.Raw, asnp.Options{VCEK: read(t, "vcek_milan.der"), Now: verifyAt})
	if err != nil {
		t.Fatalf("produced report does not verify: %v", err)
	}
	if c.ReportData != hex.EncodeToString(rd[:]) {
		t.Fatalf("report data %s", c.ReportData)
	}
	other := rd
	other[63] ^= 1
	if _, err := r.Report(context.Background(), other); !errors.Is(err, ErrReportFailed) || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("other report data: %v, want ErrReportFailed wrapping EINVAL", err)
	}
}

// goSevGuestFakes drive the go-sev-guest client code paths (extended
// report ioctls, configfs-style provider) with go-sev-guest's own fake,
// which signs synthetic reports with a test-only VCEK.
func TestGoSevGuestFakes(t *testing.T) {
	tcs := sevtest.TestCases()
	opts := &sevtest.DeviceOptions{Now: time.Now(), Product: abi.DefaultSevProduct()}
	dev, err := sevtest.TcDevice(tcs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Open(""); err != nil {
		t.Fatal(err)
	}
	prov, err := sevtest.TcQuoteProvider(tcs, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		r     *Reporter
		iface string
	}{
		{"device", FromDevice(dev), InterfaceDevice},
		{"quote provider", FromQuoteProvider(prov), InterfaceConfigfs},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer c.r.Close()
			if c.r.Interface() != c.iface {
				t.Fatalf("interface %q", c.r.Interface())
			}
			for _, tc := range tcs {
				raw, err := c.r.Report(context.Background(), tc.Input)
				if tc.WantErr != "" || tc.FwErr != 0 {
					if !errors.Is(err, ErrReportFailed) {
						t.Fatalf("%s: err %v, want ErrReportFailed", tc.Name, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", tc.Name, err)
				}
				if len(raw) <= ReportSize {
					t.Fatalf("%s: no certificate table after the report", tc.Name)
				}
				if !bytes.Equal(raw[0x50:0x90], tc.Input[:]) {
					t.Fatalf("%s: report data differs", tc.Name)
				}
				key := dev.Signer.Vcek
				if tc.EK == sevtest.KeyChoiceVlek {
					key = dev.Signer.Vlek
				}
				if err := verify.SnpReportSignature(raw[:ReportSize], key); err != nil {
					t.Fatalf("%s: signature: %v", tc.Name, err)
				}
			}
		})
	}
}

// fixed returns the same bytes for any report data.
func fixed(raw []byte, err error) source {
	return source{name: "test", report: func([64]byte) ([]byte, error) { return raw, err }}
}

func TestReportErrors(t *testing.T) {
	raw := read(t, "attestation_milan.bin")
	var rd [64]byte
	copy(rd[:], raw[0x50:0x90])
	other := rd
	other[0] ^= 1
	badVersion := bytes.Clone(raw)
	badVersion[0] = 99
	for _, c := range []struct {
		name string
		raw  []byte
		err  error
		rd   [64]byte
		want error
	}{
		{"other report data", raw, nil, other, ErrReportDataMismatch},
		{"truncated", raw[:ReportSize-1], nil, rd, ErrMalformedReport},
		{"empty", nil, nil, rd, ErrMalformedReport},
		{"bad version", badVersion, nil, rd, ErrMalformedReport},
		{"firmware error", nil, syscall.EIO, rd, syscall.EIO},
		{"busy", nil, syscall.EBUSY, rd, ErrReportFailed},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := newReporter(fixed(c.raw, c.err), -1).Report(context.Background(), c.rd)
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
}

func TestBusyRetriedAndClose(t *testing.T) {
	src, rd := replay(t)
	var calls atomic.Int32
	r := newReporter(source{name: "test", report: func(in [64]byte) ([]byte, error) {
		if calls.Add(1) < 2 {
			return nil, syscall.EAGAIN
		}
		return src.report(in)
	}}, 0)
	if _, err := r.Report(context.Background(), rd); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d calls, want 2", calls.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Report(ctx, rd); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Report(context.Background(), rd); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestOpenHere(t *testing.T) {
	if _, err := Open(context.Background(), Options{DevicePath: t.TempDir() + "/sev-guest", DisableConfigfs: true}); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("missing device: %v, want ErrNoDevice", err)
	}
	r, err := Open(context.Background(), Options{})
	if err != nil {
		if !errors.Is(err, ErrNoDevice) {
			t.Fatalf("Open: %v, want ErrNoDevice outside an SEV-SNP guest", err)
		}
		t.Logf("not an SEV-SNP guest: %v", err)
		return
	}
	t.Logf("SEV-SNP report interface: %s", r.Interface())
	r.Close()
}

func FuzzCheckReport(f *testing.F) {
	raw := read(f, "attestation_milan.bin")
	f.Add(raw, raw[0x50:0x90])
	f.Add(raw[:100], make([]byte, 64))
	f.Fuzz(func(t *testing.T, raw, rd []byte) {
		var want [64]byte
		copy(want[:], rd)
		out, err := checkReport(raw, want)
		if err == nil && (!bytes.Equal(out, raw) || !bytes.Equal(raw[0x50:0x90], want[:])) {
			t.Fatal("accepted a report over other report data")
		}
	})
}

func BenchmarkReportReplay(b *testing.B) {
	src, rd := replay(b)
	r := newReporter(src, 0)
	defer r.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Report(context.Background(), rd); err != nil {
			b.Fatal(err)
		}
	}
}
