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

	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/pcs"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func at(s string) func() time.Time {
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return func() time.Time { return tm }
}

const (
	nowDCAP = "2025-06-20T00:00:00Z" // inside sgx_quote_v3_collateral.json
	nowOE   = "2026-01-01T00:00:00Z"
)

// oeWrap builds an OE remote report header around a quote.
func oeWrap(q []byte) []byte {
	h := make([]byte, OEHeaderSize)
	binary.LittleEndian.PutUint32(h[0:], OEReportVersion)
	binary.LittleEndian.PutUint32(h[4:], OETypeSGX)
	binary.LittleEndian.PutUint64(h[8:], uint64(len(q)))
	return append(h, q...)
}

func TestVerifyVectors(t *testing.T) {
	coll, err := pcs.LoadCollateralFile("testdata/sgx_quote_v3_collateral.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		file       string
		coll       *pcs.Collateral
		now        string
		debug      bool
		prodID     string
		wantStatus string
	}{
		{"dcap-qvl", "sgx_quote_v3.bin", nil, nowDCAP, false, "0", ""},
		// The PCK's SGX component 7 is 4, below the SWHardeningNeeded level's 12.
		{"dcap-qvl collateral", "sgx_quote_v3.bin", coll, nowDCAP, false, "0", claims.TCBConfigurationAndSWHardeningNeeded},
		{"openenclave", "oe_sgx_quote_v3.bin", nil, nowOE, true, "1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := readFile(t, tc.file)
			q, err := ParseQuote(raw)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(q.Marshal(), raw) {
				t.Fatal("Marshal does not reproduce the input")
			}
			c, err := Verify(context.Background(), raw, Options{Now: at(tc.now), Collateral: tc.coll})
			if err != nil {
				t.Fatal(err)
			}
			if c.TEE != claims.TEESGX || c.Debug != tc.debug || c.Measurements["isvprodid"] != tc.prodID ||
				c.Measurements["mrenclave"] != hex.EncodeToString(q.Report.MRENCLAVE[:]) ||
				c.Measurements["mrsigner"] != hex.EncodeToString(q.Report.MRSIGNER[:]) ||
				c.ReportData != hex.EncodeToString(q.Report.ReportData[:]) {
				t.Fatalf("claims %+v", c)
			}
			if tc.wantStatus == "" {
				return
			}
			if c.TCB == nil || c.TCB.Status != tc.wantStatus || c.TCB.FMSPC != "00a067110000" ||
				len(c.TCB.AdvisoryIDs) != 2 || c.TCB.AdvisoryIDs[0] != "INTEL-SA-00289" {
				t.Fatalf("tcb %+v", c.TCB)
			}
		})
	}
}

func TestOERemoteReport(t *testing.T) {
	good := oeWrap(readFile(t, "oe_sgx_quote_v3.bin"))
	c, err := VerifyOERemoteReport(context.Background(), good, Options{Now: at(nowOE)})
	if err != nil || c.Measurements["isvsvn"] != "1" {
		t.Fatalf("err %v claims %+v", err, c)
	}
	// Open Enclave's sgx_report_bad.bin: its PCK Processor CA certificate has
	// an altered subject attribute (2.5.68.10 instead of O), so the CA's
	// signature and the leaf's issuer link both break.
	bad := readFile(t, "oe_remote_report_sgx_expired.bin")
	rep, err := ParseOERemoteReport(bad)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Quote.Report.ISVProdID != 1 || len(rep.RawQuote) != 4580 {
		t.Fatalf("report %+v", rep.Quote.Report)
	}
	if _, err := VerifyOERemoteReport(context.Background(), bad, Options{Now: at("2026-01-01T00:00:00Z")}); !errors.Is(err, ErrPCKChain) {
		t.Fatalf("got %v", err)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"short", good[:10], ErrQuoteFormat},
		{"version", func() []byte { b := bytes.Clone(good); b[0] = 2; return b }(), ErrUnsupportedVersion},
		{"type", func() []byte { b := bytes.Clone(good); b[4] = 1; return b }(), ErrUnsupportedVersion},
		{"size", func() []byte { b := bytes.Clone(good); b[8]++; return b }(), ErrQuoteFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseOERemoteReport(tc.in); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyOneByteFlips(t *testing.T) {
	raw := readFile(t, "sgx_quote_v3.bin")
	q, err := ParseQuote(raw)
	if err != nil {
		t.Fatal(err)
	}
	sig := q.SignedLen() + 4
	qe := sig + 128
	auth := qe + 384 + 64 + 2
	chainStart := auth + len(q.QEAuthData) + 6
	chain := raw[chainStart:]
	end := bytes.Index(chain, []byte("-----END CERTIFICATE-----"))
	leafSig := chainStart + end - 12
	for _, tc := range []struct {
		name string
		off  int
		want error
	}{
		{"header user data", 30, ErrQuoteSignature},
		{"mrenclave", 48 + 64, ErrQuoteSignature},
		{"report data", 48 + 330, ErrQuoteSignature},
		{"quote signature", sig + 5, ErrQuoteSignature},
		{"attestation key", sig + 70, ErrAttestationKeyBinding},
		{"QE report", qe + 130, ErrQEReportSignature},
		{"QE report signature", qe + 400, ErrQEReportSignature},
		{"QE auth data", auth + 3, ErrAttestationKeyBinding},
		{"PCK chain", leafSig, ErrPCKChain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(raw)
			if b[tc.off] == 'A' {
				b[tc.off] = 'B'
			} else if tc.name == "PCK chain" {
				b[tc.off] = 'A'
			} else {
				b[tc.off] ^= 1
			}
			if _, err := Verify(context.Background(), b, Options{Now: at(nowDCAP)}); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyCollateralMismatch(t *testing.T) {
	tdxColl, err := pcs.LoadCollateralFile("../tdx/testdata/tdx_quote_v4_collateral.json")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Verify(context.Background(), readFile(t, "sgx_quote_v3.bin"), Options{Now: at(nowDCAP), Collateral: tdxColl})
	// The TDX collateral's PCK CRL is the Platform CA's; this PCK is from the
	// Processor CA, which the CRL check notices first.
	if !errors.Is(err, ErrCollateralMismatch) {
		t.Fatalf("got %v", err)
	}
}

func TestParseQuoteErrors(t *testing.T) {
	raw := readFile(t, "sgx_quote_v3.bin")
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrQuoteFormat},
		{"truncated", raw[:1000], ErrQuoteFormat},
		{"version 4", func() []byte { b := bytes.Clone(raw); b[0] = 4; return b }(), ErrUnsupportedVersion},
		{"tdx", func() []byte { b := bytes.Clone(raw); b[4] = 0x81; return b }(), ErrUnsupportedVersion},
		{"sig len", func() []byte { b := bytes.Clone(raw); b[48+384]++; return b }(), ErrQuoteFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseQuote(tc.in); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzParseQuoteSGX(f *testing.F) {
	f.Add(readFile(f, "sgx_quote_v3.bin"))
	f.Add(readFile(f, "oe_sgx_quote_v3.bin"))
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseQuote(b)
		if err != nil {
			if !errors.Is(err, ErrQuoteFormat) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if !bytes.Equal(q.Marshal(), b) {
			t.Fatal("Marshal does not reproduce a parsed quote")
		}
	})
}

func FuzzParseOEReport(f *testing.F) {
	f.Add(readFile(f, "oe_remote_report_sgx_expired.bin"))
	f.Add(oeWrap(readFile(f, "sgx_quote_v3.bin")))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseOERemoteReport(b); err != nil && !errors.Is(err, ErrQuoteFormat) && !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("untyped error %v", err)
		}
	})
}

func BenchmarkVerifySGXWithCollateral(b *testing.B) {
	raw := readFile(b, "sgx_quote_v3.bin")
	coll, err := pcs.LoadCollateralFile("testdata/sgx_quote_v3_collateral.json")
	if err != nil {
		b.Fatal(err)
	}
	opts := Options{Now: at(nowDCAP), Collateral: coll}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(context.Background(), raw, opts); err != nil {
			b.Fatal(err)
		}
	}
}
