package tdx

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"strings"
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

func loadColl(t testing.TB, name string) *pcs.Collateral {
	t.Helper()
	c, err := pcs.LoadCollateralFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sampleCollateral assembles go-tdx-guest's raw PCS responses.
func sampleCollateral(t testing.TB) *pcs.Collateral {
	t.Helper()
	c, err := pcs.CollateralFromPCS(pcs.PCSResponses{
		TCBInfo:               readFile(t, "sample_tcbInfo_response.json"),
		TCBInfoIssuerChain:    readFile(t, "tcb_info_issuer_chain.pem"),
		QEIdentity:            readFile(t, "sample_qeIdentity_response.json"),
		QEIdentityIssuerChain: readFile(t, "qe_identity_issuer_chain.pem"),
		PCKCRL:                readFile(t, "pckcrl_platform.der"),
		PCKCRLIssuerChain:     readFile(t, "pck_crl_issuer_chain.pem"),
		RootCRL:               readFile(t, "rootcrl.der"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const (
	nowV4     = "2025-06-20T00:00:00Z" // inside tdx_quote_v4_collateral.json
	nowV5     = "2026-02-20T00:00:00Z" // inside tdx_quote_v5_outdated_collateral.json
	nowSample = "2023-06-20T00:00:00Z" // inside go-tdx-guest's sample collateral
)

func TestParseQuoteRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		file     string
		version  uint16
		bodyType uint16
		trailing int
	}{
		{"tdx_quote_v4.bin", 4, BodyTypeTD10, 70},
		{"tdx_quote_v5_outdated.bin", 5, BodyTypeTD15, 0},
		{"tdx_prod_quote_SPR_E4.dat", 4, BodyTypeTD10, 39},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw := readFile(t, tc.file)
			q, err := ParseQuote(raw)
			if err != nil {
				t.Fatal(err)
			}
			if q.Header.Version != tc.version || q.BodyType != tc.bodyType || len(q.Trailing) != tc.trailing {
				t.Fatalf("version %d body %d trailing %d", q.Header.Version, q.BodyType, len(q.Trailing))
			}
			if !bytes.Equal(q.Marshal(), raw) {
				t.Fatal("Marshal does not reproduce the input")
			}
			if q.Certification.PCK.Type != CertTypePCKChain {
				t.Fatalf("inner cert type %d", q.Certification.PCK.Type)
			}
		})
	}
}

func TestParseQuoteErrors(t *testing.T) {
	raw := readFile(t, "tdx_quote_v4.bin")
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(raw)) }
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrQuoteFormat},
		{"short header", raw[:40], ErrQuoteFormat},
		{"truncated", raw[:2000], ErrQuoteFormat},
		{"version 3", mut(func(b []byte) []byte { b[0] = 3; return b }), ErrUnsupportedVersion},
		{"sgx tee type", mut(func(b []byte) []byte { b[4] = 0; return b }), ErrUnsupportedVersion},
		{"key type", mut(func(b []byte) []byte { b[2] = 3; return b }), ErrUnsupportedVersion},
		{"sig len", mut(func(b []byte) []byte { b[48+584]++; return b }), ErrQuoteFormat},
		{"cert type", mut(func(b []byte) []byte { b[48+584+4+128] = 5; return b }), ErrUnsupportedVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseQuote(tc.in); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	v5 := bytes.Clone(readFile(t, "tdx_quote_v5_outdated.bin"))
	v5[48] = 1 // body type 1 (SGX enclave report) is not a TD body
	if _, err := ParseQuote(v5); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("v5 body type 1: %v", err)
	}
}

func TestVerifyVectors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		file       string
		coll       func(testing.TB) *pcs.Collateral
		now        string
		wantErr    error
		wantStatus string
		wantFMSPC  string
	}{
		{"v4 no collateral", "tdx_quote_v4.bin", nil, nowV4, nil, "", ""},
		{"v4 collateral", "tdx_quote_v4.bin", func(t testing.TB) *pcs.Collateral { return loadColl(t, "tdx_quote_v4_collateral.json") }, nowV4, nil, claims.TCBUpToDate, "b0c06f000000"},
		{"v5 no collateral", "tdx_quote_v5_outdated.bin", nil, nowV5, nil, "", ""},
		// The v5 platform's SEAMLDR ACM SVN (SGX component 8) is 3 while every
		// level of its TCB info requires 5: Intel's QVL reports
		// TCB_NOT_SUPPORTED, and so do we.
		{"v5 collateral", "tdx_quote_v5_outdated.bin", func(t testing.TB) *pcs.Collateral { return loadColl(t, "tdx_quote_v5_outdated_collateral.json") }, nowV5, ErrTCBNotSupported, "", ""},
		{"go-tdx-guest no collateral", "tdx_prod_quote_SPR_E4.dat", nil, nowSample, nil, "", ""},
		{"go-tdx-guest no collateral today", "tdx_prod_quote_SPR_E4.dat", nil, "2026-11-27T00:00:00Z", nil, "", ""},
		// The sample TCB info lists newer SGX SVNs (components 1, 2 and 5) than
		// the PCK certificate: no level matches.
		{"go-tdx-guest collateral", "tdx_prod_quote_SPR_E4.dat", sampleCollateral, nowSample, ErrTCBNotSupported, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := readFile(t, tc.file)
			opts := Options{Now: at(tc.now)}
			if tc.coll != nil {
				opts.Collateral = tc.coll(t)
			}
			c, err := Verify(ctx, raw, opts)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			q, _ := ParseQuote(raw)
			checkClaims(t, c, q)
			if tc.wantStatus == "" {
				if c.TCB != nil {
					t.Fatalf("TCB without collateral: %+v", c.TCB)
				}
				return
			}
			if c.TCB == nil || c.TCB.Status != tc.wantStatus || c.TCB.FMSPC != tc.wantFMSPC {
				t.Fatalf("tcb %+v", c.TCB)
			}
			if c.TCB.TEETCBSVN != hex.EncodeToString(q.Body.TEETCBSVN[:]) || c.TCB.TCBDate != "2024-03-13T00:00:00Z" {
				t.Fatalf("tcb %+v", c.TCB)
			}
			if c.Sources["tcb"] != SourceCollateral {
				t.Fatalf("sources %v", c.Sources)
			}
		})
	}
}

func checkClaims(t *testing.T, c *claims.Claims, q *Quote) {
	t.Helper()
	h := hex.EncodeToString
	b := q.Body
	want := map[string]string{
		"mrtd": h(b.MRTD[:]), "rtmr0": h(b.RTMR[0][:]), "rtmr1": h(b.RTMR[1][:]), "rtmr2": h(b.RTMR[2][:]),
		"rtmr3": h(b.RTMR[3][:]), "mrseam": h(b.MRSEAM[:]), "mrsignerseam": h(b.MRSIGNERSEAM[:]),
		"mrconfigid": h(b.MRCONFIGID[:]), "mrowner": h(b.MROWNER[:]), "mrownerconfig": h(b.MROWNERCONFIG[:]),
		"td_attributes": h(b.TDAttributes[:]), "xfam": h(b.XFAM[:]),
	}
	for k, v := range want {
		if c.Measurements[k] != v {
			t.Errorf("%s = %q, want %q", k, c.Measurements[k], v)
		}
	}
	if c.TEE != claims.TEETDX || c.Version != claims.Version || c.Simulated {
		t.Errorf("tee %q version %d simulated %v", c.TEE, c.Version, c.Simulated)
	}
	if c.ReportData != h(b.ReportData[:]) || c.Debug != (b.TDAttributes[0]&1 == 1) {
		t.Errorf("report data / debug mismatch")
	}
	if c.Sources["measurements"] != SourceQuote || c.Sources["tee"] != SourcePCKChain {
		t.Errorf("sources %v", c.Sources)
	}
}

func TestVerifyKnownValues(t *testing.T) {
	c, err := Verify(context.Background(), readFile(t, "tdx_quote_v4.bin"), Options{Now: at(nowV4)})
	if err != nil {
		t.Fatal(err)
	}
	// Pinned from the bytes (offsets of "TDX DCAP Quoting Library API" A.3.2).
	if c.Measurements["mrtd"] != "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7" ||
		c.Measurements["td_attributes"] != "0000001000000000" || c.Debug {
		t.Fatalf("claims %+v", c)
	}
	v5, err := Verify(context.Background(), readFile(t, "tdx_quote_v5_outdated.bin"), Options{Now: at(nowV5)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := v5.Measurements["mrservicetd"]; !ok {
		t.Fatal("TDX 1.5 body without mrservicetd claim")
	}
}

// signedRegions returns, per region, an offset inside it and the error a
// one-byte flip there must produce.
func signedRegions(t *testing.T, raw []byte) map[string]struct {
	off  int
	want error
} {
	q, err := ParseQuote(raw)
	if err != nil {
		t.Fatal(err)
	}
	sig := q.SignedLen() + 4
	qe := sig + 64 + 64 + 6
	auth := qe + 384 + 64 + 2
	chain := auth + len(q.Certification.QEAuthData) + 6
	return map[string]struct {
		off  int
		want error
	}{
		"header user data": {28, ErrQuoteSignature},
		"header vendor id": {12, ErrQuoteSignature},
		"body mrtd":        {q.SignedLen() - 584 + 136, ErrQuoteSignature},
		"body report data": {q.SignedLen() - 584 + 520, ErrQuoteSignature},
		"quote signature":  {sig + 10, ErrQuoteSignature},
		"attestation key":  {sig + 64 + 10, ErrAttestationKeyBinding},
		"QE report":        {qe + 64, ErrQEReportSignature},
		"QE report data":   {qe + 320, ErrQEReportSignature},
		"QE report sig":    {qe + 384 + 3, ErrQEReportSignature},
		"QE auth data":     {auth + 1, ErrAttestationKeyBinding},
		"PCK chain":        {chain + leafSignatureOffset(t, raw[chain:]), ErrPCKChain},
	}
}

// leafSignatureOffset finds a base64 character in the leaf certificate's
// signature, so the flip corrupts the signature rather than the PEM framing.
func leafSignatureOffset(t *testing.T, chain []byte) int {
	end := bytes.Index(chain, []byte("-----END CERTIFICATE-----"))
	if end < 0 {
		t.Fatal("no PEM in chain")
	}
	i := end - 1
	for n := 0; n < 20; i-- {
		if c := chain[i]; c != '\n' && c != '=' {
			n++
		}
	}
	for chain[i] == '\n' || chain[i] == '=' {
		i--
	}
	return i
}

func flip(b []byte, off int) []byte {
	out := bytes.Clone(b)
	c := out[off]
	if strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", c) >= 0 {
		// Keep PEM valid base64: swap for another base64 digit.
		if c == 'A' {
			out[off] = 'B'
		} else {
			out[off] = 'A'
		}
		return out
	}
	out[off] ^= 0x01
	return out
}

func TestVerifyOneByteFlips(t *testing.T) {
	for _, file := range []string{"tdx_quote_v4.bin", "tdx_quote_v5_outdated.bin"} {
		raw := readFile(t, file)
		now := nowV4
		if strings.Contains(file, "v5") {
			now = nowV5
		}
		for name, r := range signedRegions(t, raw) {
			t.Run(file+"/"+name, func(t *testing.T) {
				_, err := Verify(context.Background(), flip(raw, r.off), Options{Now: at(now)})
				if !errors.Is(err, r.want) {
					t.Fatalf("got %v, want %v", err, r.want)
				}
			})
		}
	}
}

func TestVerifyTrailingBytesIgnored(t *testing.T) {
	raw := readFile(t, "tdx_quote_v4.bin")
	raw = append(bytes.Clone(raw), []byte("unsigned padding")...)
	if _, err := Verify(context.Background(), raw, Options{Now: at(nowV4)}); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyChainTime(t *testing.T) {
	// The v5 PCK leaf is valid from 2026-01-23.
	_, err := Verify(context.Background(), readFile(t, "tdx_quote_v5_outdated.bin"), Options{Now: at("2025-12-01T00:00:00Z")})
	if !errors.Is(err, ErrPCKChain) {
		t.Fatalf("got %v", err)
	}
}

func TestVerifyCollateralFailures(t *testing.T) {
	ctx := context.Background()
	v4 := readFile(t, "tdx_quote_v4.bin")
	// tamper edits the signed bytes of the TCB info (tcb) or QE identity.
	tamper := func(tcb bool, old, new string) *pcs.Collateral {
		t.Helper()
		c := loadColl(t, "tdx_quote_v4_collateral.json")
		raw := &c.QEIdentity.Raw
		if tcb {
			raw = &c.TCBInfo.Raw
		}
		edited := bytes.Replace(*raw, []byte(old), []byte(new), 1)
		if bytes.Equal(edited, *raw) {
			t.Fatalf("%q not found", old)
		}
		*raw = edited
		return c
	}
	sgxColl := func() *pcs.Collateral {
		c, err := pcs.LoadCollateralFile("../sgx/testdata/sgx_quote_v3_collateral.json")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	mixQE := loadColl(t, "tdx_quote_v4_collateral.json")
	s := sgxColl()
	mixQE.QEIdentity, mixQE.QEIdentityIssuerChain = s.QEIdentity, s.QEIdentityIssuerChain
	mixTCB := loadColl(t, "tdx_quote_v4_collateral.json")
	mixTCB.TCBInfo, mixTCB.TCBInfoIssuerChain = s.TCBInfo, s.TCBInfoIssuerChain
	noCRL := loadColl(t, "tdx_quote_v4_collateral.json")
	noCRL.PCKCRL = nil
	wrongCRL := loadColl(t, "tdx_quote_v4_collateral.json")
	wrongCRL.PCKCRL = s.PCKCRL // the Processor CA's CRL, not the Platform CA's

	for _, tc := range []struct {
		name  string
		quote []byte
		coll  *pcs.Collateral
		now   string
		opts  func(*Options)
		want  error
	}{
		{"expired", v4, loadColl(t, "tdx_quote_v4_collateral.json"), "2025-08-01T00:00:00Z", nil, ErrCollateralExpired},
		{"not yet issued", v4, loadColl(t, "tdx_quote_v4_collateral.json"), "2025-06-01T00:00:00Z", nil, ErrCollateralExpired},
		{"tcb info signature", v4, tamper(true, `"tcbStatus":"UpToDate"`, `"tcbStatus":"OutOfDate"`), nowV4, nil, ErrCollateralSignature},
		{"qe identity signature", v4, tamper(false, `"isvprodid":2`, `"isvprodid":3`), nowV4, nil, ErrCollateralSignature},
		{"fmspc", v4, loadColl(t, "tdx_quote_v5_outdated_collateral.json"), nowV5, nil, ErrFMSPCMismatch},
		{"sgx qe identity", v4, mixQE, nowV4, nil, ErrQEIdentityMismatch},
		{"sgx tcb info", v4, mixTCB, nowV4, nil, ErrCollateralMismatch},
		{"crl required", v4, noCRL, nowV4, func(o *Options) { o.CheckCRL = true }, ErrCollateralFormat},
		{"crl of other CA", v4, wrongCRL, nowV4, nil, ErrCollateralMismatch},
		{"foreign roots", v4, loadColl(t, "tdx_quote_v4_collateral.json"), nowV4, func(o *Options) { o.TrustedRoots = x509PoolOf(t) }, ErrPCKChain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Now: at(tc.now), Collateral: tc.coll}
			if tc.opts != nil {
				tc.opts(&opts)
			}
			_, err := Verify(ctx, tc.quote, opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("expired allowed", func(t *testing.T) {
		c, err := Verify(ctx, v4, Options{Now: at("2025-08-01T00:00:00Z"), Collateral: loadColl(t, "tdx_quote_v4_collateral.json"), AllowExpiredCollateral: true})
		if err != nil {
			t.Fatal(err)
		}
		if c.TCB == nil || !c.TCB.CollateralExpired || c.TCB.Status != claims.TCBUpToDate {
			t.Fatalf("tcb %+v", c.TCB)
		}
	})
	t.Run("getter", func(t *testing.T) {
		var calls int
		g := pcs.GetterFunc(func(_ context.Context, req pcs.CollateralRequest) (*pcs.Collateral, error) {
			calls++
			if req.TEE != pcs.TEETDX || req.CA != pcs.CAPlatform || hex.EncodeToString(req.FMSPC[:]) != "b0c06f000000" {
				t.Errorf("request %+v", req)
			}
			return loadColl(t, "tdx_quote_v4_collateral.json"), nil
		})
		c, err := Verify(ctx, v4, Options{Now: at(nowV4), Getter: g, CheckCRL: true})
		if err != nil || calls != 1 || c.TCB == nil {
			t.Fatalf("err %v calls %d", err, calls)
		}
		failing := pcs.GetterFunc(func(context.Context, pcs.CollateralRequest) (*pcs.Collateral, error) {
			return nil, ErrCollateralUnavailable
		})
		if _, err := Verify(ctx, v4, Options{Now: at(nowV4), Getter: failing}); !errors.Is(err, ErrCollateralUnavailable) {
			t.Fatalf("got %v", err)
		}
	})
}

func x509PoolOf(t *testing.T) *x509.CertPool {
	t.Helper()
	// A pool with only the TCB signing certificate: not a PCK root.
	c := loadColl(t, "tdx_quote_v4_collateral.json")
	p := x509.NewCertPool()
	p.AddCert(c.TCBInfoIssuerChain[0])
	return p
}

func TestV5BodyDescriptorSigned(t *testing.T) {
	raw := readFile(t, "tdx_quote_v5_outdated.bin")
	if binary.LittleEndian.Uint16(raw[48:]) != BodyTypeTD15 {
		t.Fatal("fixture is not a TD 1.5 body")
	}
	// The v5 TEE_TCB_SVN2 and MRSERVICETD are signed too.
	q, _ := ParseQuote(raw)
	_, err := Verify(context.Background(), flip(raw, q.SignedLen()-1), Options{Now: at(nowV5)})
	if !errors.Is(err, ErrQuoteSignature) {
		t.Fatalf("got %v", err)
	}
}

func FuzzParseQuoteTDX(f *testing.F) {
	for _, name := range []string{"tdx_quote_v4.bin", "tdx_quote_v5_outdated.bin", "tdx_prod_quote_SPR_E4.dat"} {
		f.Add(readFile(f, name))
	}
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

func BenchmarkParseQuote(b *testing.B) {
	raw := readFile(b, "tdx_quote_v4.bin")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseQuote(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyTDX(b *testing.B) {
	raw := readFile(b, "tdx_quote_v4.bin")
	opts := Options{Now: at(nowV4)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(context.Background(), raw, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyTDXWithCollateral(b *testing.B) {
	raw := readFile(b, "tdx_quote_v4.bin")
	opts := Options{Now: at(nowV4), Collateral: loadColl(b, "tdx_quote_v4_collateral.json"), CheckCRL: true}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(context.Background(), raw, opts); err != nil {
			b.Fatal(err)
		}
	}
}
