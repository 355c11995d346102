package sgx

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"testing"
	"time"

	asgx "github.com/teegate/teegate/attest/sgx"
	"github.com/teegate/teegate/enclave"
)

// A time inside the validity of the quote's PCK chain.
var verifyAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// vector is the real Open Enclave quote wrapped as EGo's GetRemoteReport
// returns it: {version 1, type 2 (SGX remote), quote size u64} || quote.
func vector(t testing.TB) ([]byte, [64]byte) {
	t.Helper()
	quote, err := os.ReadFile("testdata/oe_sgx_quote_v3.bin")
	if err != nil {
		t.Fatal(err)
	}
	raw := binary.LittleEndian.AppendUint32(nil, asgx.OEReportVersion)
	raw = binary.LittleEndian.AppendUint32(raw, asgx.OETypeSGX)
	raw = binary.LittleEndian.AppendUint64(raw, uint64(len(quote)))
	raw = append(raw, quote...)
	rep, err := asgx.ParseOERemoteReport(raw)
	if err != nil {
		t.Fatal(err)
	}
	return raw, rep.Quote.Report.ReportData
}

// fakeEGo stands for the EGo runtime: inside an enclave it replays the real
// Open Enclave remote report for the report data that report carries.
type fakeEGo struct {
	selfErr   error
	sealKey   []byte
	sealErr   error
	report    []byte
	reportFor [64]byte
	reportErr error
}

func (f *fakeEGo) selfReport() error               { return f.selfErr }
func (f *fakeEGo) productSealKey() ([]byte, error) { return f.sealKey, f.sealErr }
func (f *fakeEGo) remoteReport(rd []byte) ([]byte, error) {
	if f.reportErr != nil {
		return nil, f.reportErr
	}
	if !bytes.Equal(rd, f.reportFor[:]) {
		return nil, errors.New("OE_INVALID_PARAMETER")
	}
	return bytes.Clone(f.report), nil
}

func inEnclave(t testing.TB) *fakeEGo {
	raw, rd := vector(t)
	return &fakeEGo{sealKey: bytes.Repeat([]byte{0x5a}, 16), report: raw, reportFor: rd}
}

func TestRealReportVerifies(t *testing.T) {
	f := inEnclave(t)
	r, err := open(f)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := r.CPUEvidence(context.Background(), f.reportFor)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Format != enclave.KindSGX || r.Kind() != "sgx" {
		t.Fatalf("format %q kind %q", ev.Format, r.Kind())
	}
	now := func() time.Time { return verifyAt }
	c, err := asgx.Verify(context.Background(), ev.Raw, asgx.Options{Now: now})
	if err != nil {
		t.Fatalf("produced quote does not verify: %v", err)
	}
	if c.ReportData != hex.EncodeToString(f.reportFor[:]) {
		t.Fatalf("report data %s", c.ReportData)
	}
	oe, err := r.RemoteReport(context.Background(), f.reportFor)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asgx.VerifyOERemoteReport(context.Background(), oe, asgx.Options{Now: now}); err != nil {
		t.Fatalf("OE report does not verify: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	raw, rd := vector(t)
	flipped := bytes.Clone(raw)
	flipped[0] ^= 1 // OE header version
	other := rd
	other[5] ^= 1
	for _, c := range []struct {
		name    string
		mutate  func(*fakeEGo)
		atOpen  bool
		rd      [64]byte
		wantErr error
	}{
		{"outside an enclave", func(f *fakeEGo) { f.selfErr = errors.New(oeUnsupported) }, true, rd, ErrNotInEnclave},
		{"zero seal key", func(f *fakeEGo) { f.sealKey = make([]byte, 16) }, true, rd, ErrNotInEnclave},
		{"no seal key", func(f *fakeEGo) { f.sealKey = nil }, true, rd, ErrNotInEnclave},
		{"seal key error", func(f *fakeEGo) { f.sealErr = errors.New("OE_FAILURE") }, true, rd, ErrNotInEnclave},
		{"remote report unsupported", func(f *fakeEGo) { f.reportErr = errors.New(oeUnsupported) }, false, rd, ErrNotInEnclave},
		{"remote report fails", func(f *fakeEGo) { f.reportErr = errors.New("OE_QUOTE_LIBRARY_LOAD_ERROR") }, false, rd, ErrReportFailed},
		{"malformed report", func(f *fakeEGo) { f.report = flipped }, false, rd, ErrMalformedReport},
		{"truncated report", func(f *fakeEGo) { f.report = raw[:200] }, false, rd, ErrMalformedReport},
		{"other report data", func(f *fakeEGo) { f.reportFor = other }, false, other, ErrReportDataMismatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := inEnclave(t)
			c.mutate(f)
			r, err := open(f)
			if c.atOpen {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("open: %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.CPUEvidence(context.Background(), c.rd); !errors.Is(err, c.wantErr) {
				t.Fatalf("evidence: %v, want %v", err, c.wantErr)
			}
		})
	}
	f := inEnclave(t)
	r, _ := open(f)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.CPUEvidence(ctx, rd); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func FuzzCheckReport(f *testing.F) {
	raw, rd := vector(f)
	f.Add(raw, rd[:])
	f.Add(raw[:100], make([]byte, 64))
	f.Fuzz(func(t *testing.T, raw, rd []byte) {
		var want [64]byte
		copy(want[:], rd)
		if out, err := checkReport(raw, want); err == nil && !bytes.Equal(out, raw) {
			t.Fatal("accepted report altered")
		}
	})
}

func BenchmarkCPUEvidenceReplay(b *testing.B) {
	f := inEnclave(b)
	r, err := open(f)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.CPUEvidence(context.Background(), f.reportFor); err != nil {
			b.Fatal(err)
		}
	}
}
