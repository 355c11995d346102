package snp

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/google/uuid"

	"github.com/teegate/teegate/attest/claims"
)

// verifyTime lies inside the validity of the real Milan VCEK
// (2022-09-24..2029-09-24) and the AMD roots.
var verifyTime = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// certTable builds an extended-request certificate table (GHCB spec
// layout) holding the given DER certificates by GUID.
func certTable(t testing.TB, certs map[string][]byte) []byte {
	t.Helper()
	var table abi.CertTable
	for guid, der := range certs {
		table.Entries = append(table.Entries, abi.CertTableEntry{GUID: uuid.MustParse(guid), RawCert: der})
	}
	return table.Marshal()
}

func TestVerifyMilan(t *testing.T) {
	report, vcek := read(t, "attestation_milan.bin"), read(t, "vcek_milan.der")
	withTable := append(bytes.Clone(report), certTable(t, map[string][]byte{abi.VcekGUID: vcek})...)
	tests := []struct {
		name   string
		report []byte
		opts   Options
	}{
		{"vcek option, embedded roots", report, Options{VCEK: vcek, Now: verifyTime}},
		{"vcek in certificate table", withTable, Options{Now: verifyTime}},
		{"explicit KDS chain", report, Options{VCEK: vcek, CertChain: read(t, "ask_ark_milan_vcek_kds.pem"), Now: verifyTime}},
		{"option overrides table", append(bytes.Clone(report), certTable(t, map[string][]byte{abi.VcekGUID: []byte("junk")})...), Options{VCEK: vcek, Now: verifyTime}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Verify(context.Background(), tt.report, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			want := &claims.Claims{
				Version: claims.Version,
				TEE:     claims.TEESEVSNP,
				// Guest policy 0x0b0000: the DEBUG bit (19) is set.
				Debug: true,
				Measurements: map[string]string{
					"measurement": "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01",
					"host_data":   strings.Repeat("00", 32),
					"family_id":   strings.Repeat("00", 16),
					"image_id":    strings.Repeat("00", 16),
				},
				ReportData: "0102030405" + strings.Repeat("00", 59),
			}
			if c.Version != want.Version || c.TEE != want.TEE || c.Simulated || c.Debug != want.Debug || c.ReportData != want.ReportData {
				t.Errorf("claims = %+v", c)
			}
			for k, v := range want.Measurements {
				if c.Measurements[k] != v {
					t.Errorf("measurement %s = %q, want %q", k, c.Measurements[k], v)
				}
			}
			// REPORTED_TCB 0x4405000000000002: bootloader 2, TEE 0, SNP 5,
			// microcode 0x44, the TCB the VCEK certifies.
			// Without minimums the status is Unknown, never UpToDate.
			if c.TCB == nil || c.TCB.Status != claims.TCBUnknown || c.TCB.TEETCBSVN != "0200000000000544" {
				t.Errorf("tcb = %+v", c.TCB)
			}
			wantTCB := claims.SNPTCBParts{BootLoader: 2, SNP: 5, Microcode: 0x44}
			if s := c.TCB.SNP; s == nil || s.ProductLine != "Milan" || s.Signer != "vcek" || s.Reported != wantTCB || s.Committed != wantTCB {
				t.Errorf("tcb.snp = %+v", c.TCB.SNP)
			}
			if c.Sources["measurements"] == "" || c.Sources["tcb"] == "" {
				t.Errorf("sources = %v", c.Sources)
			}
		})
	}
}

func TestVerifyErrors(t *testing.T) {
	report, vcek := read(t, "attestation_milan.bin"), read(t, "vcek_milan.der")
	withVersion := func(v uint32) []byte {
		r := bytes.Clone(report)
		binary.LittleEndian.PutUint32(r[0:4], v)
		return r
	}
	tests := []struct {
		name   string
		report []byte
		opts   Options
		want   error
	}{
		{"empty", nil, Options{VCEK: vcek, Now: verifyTime}, ErrReportFormat},
		{"truncated", report[:ReportSize-1], Options{VCEK: vcek, Now: verifyTime}, ErrReportFormat},
		{"version 1", withVersion(1), Options{VCEK: vcek, Now: verifyTime}, ErrReportFormat},
		{"version 99", withVersion(99), Options{VCEK: vcek, Now: verifyTime}, ErrReportFormat},
		{"garbage certificate table", append(bytes.Clone(report), 1, 2, 3), Options{VCEK: vcek, Now: verifyTime}, ErrReportFormat},
		{"certificate table entry wraps around", append(bytes.Clone(report), wrappingTable()...), Options{Now: verifyTime}, ErrReportFormat},
		{"no vcek", report, Options{Now: verifyTime}, ErrMissingCertificate},
		{"table without vcek", append(bytes.Clone(report), certTable(t, map[string][]byte{abi.ArkGUID: []byte("x")})...), Options{Now: verifyTime}, ErrMissingCertificate},
		{"vcek not DER", report, Options{VCEK: []byte("not a certificate"), Now: verifyTime}, ErrCertChain},
		{"vcek expired", report, Options{VCEK: vcek, Now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}, ErrCertChain},
		{"vcek not yet valid", report, Options{VCEK: vcek, Now: time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)}, ErrCertChain},
		{"other product's chain", report, Options{VCEK: vcek, CertChain: read(t, "ask_ark_genoa.pem"), Now: verifyTime}, ErrCertChain},
		{"chain not PEM", report, Options{VCEK: vcek, CertChain: []byte("junk"), Now: verifyTime}, ErrCertChain},
		{"chain without ARK", report, Options{VCEK: vcek, CertChain: firstPEM(t, read(t, "ask_ark_milan_vcek_kds.pem")), Now: verifyTime}, ErrCertChain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Verify(context.Background(), tt.report, tt.opts)
			if !errors.Is(err, tt.want) || c != nil {
				t.Fatalf("Verify = %v, %v; want %v", c, err, tt.want)
			}
		})
	}
	t.Run("canceled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Verify(ctx, report, Options{VCEK: vcek, Now: verifyTime}); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	})
}

// wrappingTable is a certificate table whose single entry's offset+length
// wraps around in uint32 arithmetic (go-sev-guest v0.15.0 then allocates
// 4 GiB and panics).
func wrappingTable() []byte {
	h := abi.CertTableHeaderEntry{GUID: uuid.MustParse(abi.VcekGUID), Offset: 48, Length: 0xFFFFFFFF}
	b := make([]byte, 2*abi.CertTableEntrySize+8)
	if err := h.Write(b); err != nil {
		panic(err)
	}
	return b
}

func firstPEM(t testing.TB, chain []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(chain)
	if block == nil {
		t.Fatal("no PEM block")
	}
	return pem.EncodeToMemory(block)
}

// TestFlipSignedRegion flips each byte the AMD-SP signs (0x000..0x29F) and
// each byte of the ECDSA r and s. Every change must fail; changes to fields
// the parser does not constrain must fail exactly with ErrSignature.
func TestFlipSignedRegion(t *testing.T) {
	report, vcek := read(t, "attestation_milan.bin"), read(t, "vcek_milan.der")
	opts := Options{VCEK: vcek, Now: verifyTime}
	// Free-form fields: any value parses, so only the signature can catch a change.
	freeForm := [][2]int{
		{0x04, 0x08},   // GUEST_SVN
		{0x10, 0x20},   // FAMILY_ID
		{0x20, 0x30},   // IMAGE_ID
		{0x30, 0x34},   // VMPL
		{0x38, 0x48},   // CURRENT_TCB, PLATFORM_INFO
		{0x50, 0x90},   // REPORT_DATA
		{0x90, 0xC0},   // MEASUREMENT
		{0xC0, 0xE0},   // HOST_DATA
		{0xE0, 0x180},  // ID/AUTHOR key digests, REPORT_ID, REPORT_ID_MA
		{0x180, 0x188}, // REPORTED_TCB
		{0x1A0, 0x1E8}, // CHIP_ID, COMMITTED_TCB
		{0x1F0, 0x208}, // LAUNCH_TCB, mitigation vectors
		{0x2A0, 0x2A0 + 144},
	}
	isFree := func(off int) bool {
		for _, r := range freeForm {
			if off >= r[0] && off < r[1] {
				return true
			}
		}
		return false
	}
	for off := 0; off < 0x2A0+144; off++ {
		r := bytes.Clone(report)
		r[off] ^= 0x01
		_, err := Verify(context.Background(), r, opts)
		switch {
		case err == nil:
			t.Errorf("offset %#x: flipped report verified", off)
		case isFree(off) && !errors.Is(err, ErrSignature):
			t.Errorf("offset %#x: err = %v, want ErrSignature", off, err)
		case !errors.Is(err, ErrSignature) && !errors.Is(err, ErrReportFormat):
			t.Errorf("offset %#x: err = %v, want ErrSignature or ErrReportFormat", off, err)
		}
	}
}

// fakeSigner builds a test-only AMD chain (go-sev-guest's testing package)
// whose VCEK certifies TCB 0, and signs reports with it.
type fakeSigner struct {
	signer *sevtest.AmdSigner
	chain  []byte // ASK + ARK PEM
}

func newFakeSigner(t testing.TB) *fakeSigner {
	t.Helper()
	s, err := sevtest.DefaultTestOnlyCertChain("Milan-B0", verifyTime.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Ask.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Ark.Raw})...)
	return &fakeSigner{signer: s, chain: chain}
}

func (f *fakeSigner) report(t testing.TB, edit func(r []byte)) []byte {
	t.Helper()
	raw := sevtest.CreateRawReport(&sevtest.TestReportOptions{ReportData: bytes.Repeat([]byte{0xab}, 64)})
	r := raw[:abi.ReportSize]
	if edit != nil {
		edit(r)
	}
	R, S, err := f.signer.Sign(abi.SignedComponent(r))
	if err != nil {
		t.Fatal(err)
	}
	if err := abi.SetSignature(R, S, r); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(r)
}

func TestVerifyFakeChain(t *testing.T) {
	f := newFakeSigner(t)
	setTCB := func(off int, v kds.TCBParts) func([]byte) {
		return func(r []byte) {
			tcb, err := kds.ComposeTCBParts(v)
			if err != nil {
				t.Fatal(err)
			}
			binary.LittleEndian.PutUint64(r[off:off+8], uint64(tcb))
		}
	}
	base := Options{VCEK: f.signer.Vcek.Raw, CertChain: f.chain, Now: verifyTime}
	tests := []struct {
		name   string
		report []byte
		opts   Options
		want   error
	}{
		{"consistent", f.report(t, nil), base, nil},
		{"not debug", f.report(t, func(r []byte) {
			binary.LittleEndian.PutUint64(r[0x08:0x10], abi.SnpPolicyToBytes(abi.SnpPolicy{}))
		}), base, nil},
		{"reported TCB above the VCEK's", f.report(t, setTCB(0x180, kds.TCBParts{SnpSpl: 8})), base, ErrTCB},
		{"current TCB equal to the VCEK's", f.report(t, setTCB(0x38, kds.TCBParts{})), base, nil},
		{"chip id differs from VCEK HWID", f.report(t, func(r []byte) { r[0x1A0] = 1 }), base, ErrTCB},
		{"fake chain not trusted by default", f.report(t, nil), Options{VCEK: f.signer.Vcek.Raw, Now: verifyTime}, ErrCertChain},
		{"vcek and chain from the table", append(f.report(t, nil), certTable(t, map[string][]byte{abi.VcekGUID: f.signer.Vcek.Raw})...), Options{CertChain: f.chain, Now: verifyTime}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Verify(context.Background(), tt.report, tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want == nil && (c == nil || c.ReportData != strings.Repeat("ab", 64)) {
				t.Fatalf("claims = %+v", c)
			}
		})
	}
	t.Run("debug bit", func(t *testing.T) {
		off, err := Verify(context.Background(), f.report(t, func(r []byte) {
			binary.LittleEndian.PutUint64(r[0x08:0x10], abi.SnpPolicyToBytes(abi.SnpPolicy{SMT: true}))
		}), base)
		if err != nil || off.Debug {
			t.Fatalf("non-debug policy: %+v, %v", off, err)
		}
		on, err := Verify(context.Background(), f.report(t, nil), base)
		if err != nil || !on.Debug {
			t.Fatalf("debug policy: %+v, %v", on, err)
		}
	})
}

func FuzzParse(f *testing.F) {
	report, err := os.ReadFile("testdata/attestation_milan.bin")
	if err != nil {
		f.Fatal(err)
	}
	vcek, err := os.ReadFile("testdata/vcek_milan.der")
	if err != nil {
		f.Fatal(err)
	}
	var table abi.CertTable
	table.Entries = []abi.CertTableEntry{{GUID: uuid.MustParse(abi.VcekGUID), RawCert: vcek}}
	f.Add(report)
	f.Add(append(bytes.Clone(report), table.Marshal()...))
	f.Add(report[:100])
	f.Add(append(bytes.Clone(report), wrappingTable()...))
	f.Fuzz(func(t *testing.T, b []byte) {
		att, raw, err := parse(b)
		if err != nil {
			if !errors.Is(err, ErrReportFormat) {
				t.Fatalf("parse error %v does not wrap ErrReportFormat", err)
			}
			return
		}
		if len(raw) != ReportSize || att.GetReport() == nil {
			t.Fatalf("parse returned %d raw bytes, report %v", len(raw), att.GetReport())
		}
		// The parsed report must re-encode to the same bytes: no field is
		// silently dropped or reinterpreted.
		again, err := abi.ReportToAbiBytes(att.GetReport())
		if err != nil {
			t.Fatalf("re-encoding parsed report: %v", err)
		}
		if !bytes.Equal(again, raw) {
			t.Fatal("parsed report does not round-trip")
		}
	})
}

func BenchmarkVerifySNP(b *testing.B) {
	report, vcek := read(b, "attestation_milan.bin"), read(b, "vcek_milan.der")
	opts := Options{VCEK: vcek, Now: verifyTime}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(ctx, report, opts); err != nil {
			b.Fatal(err)
		}
	}
}
