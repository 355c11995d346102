package snp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sevtest "github.com/google/go-sev-guest/testing"

	"github.com/teegate/teegate/attest/claims"
)

// milanMinimum is the production policy's stated Milan minimum (AMD-SB-3019).
var milanMinimum = TCBParts{BootLoader: 0, TEE: 0, SNP: 24, Microcode: 219}

// TestMilanTCBStatus: the real Milan report (SNP SPL 5, microcode 0x44) is
// below AMD's minimum after AMD-SB-3019, Unknown without a minimum, and
// UpToDate only against a minimum it meets.
func TestMilanTCBStatus(t *testing.T) {
	report, vcek := read(t, "attestation_milan.bin"), read(t, "vcek_milan.der")
	for _, tc := range []struct {
		name string
		min  map[string]TCBParts
		want string
	}{
		{"no minimums", nil, claims.TCBUnknown},
		{"minimum for another product line only", map[string]TCBParts{"Genoa": {}}, claims.TCBUnknown},
		{"below the stated minimum", map[string]TCBParts{"Milan": milanMinimum}, claims.TCBOutOfDate},
		{"one component below", map[string]TCBParts{"Milan": {BootLoader: 2, SNP: 5, Microcode: 0x45}}, claims.TCBOutOfDate},
		{"meets the minimum exactly", map[string]TCBParts{"Milan": {BootLoader: 2, SNP: 5, Microcode: 0x44}}, claims.TCBUpToDate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Verify(context.Background(), report, Options{VCEK: vcek, Now: verifyTime, MinimumTCB: tc.min})
			if err != nil {
				t.Fatal(err)
			}
			if c.TCB.Status != tc.want {
				t.Fatalf("status %q, want %q", c.TCB.Status, tc.want)
			}
		})
	}
}

// signerWith builds a test-only Milan chain whose VCEK and VLEK certify tcb.
func signerWith(t testing.TB, tcb kds.TCBParts) *sevtest.AmdSigner {
	t.Helper()
	created := verifyTime.Add(-24 * time.Hour)
	b := &sevtest.AmdSignerBuilder{
		Keys: sevtest.DefaultAmdKeys(), ProductName: "Milan-B0", CSPID: "teegate-test",
		ArkCreationTime: created, AskCreationTime: created, AsvkCreationTime: created,
		VcekCreationTime: created, VlekCreationTime: created,
		VcekCustom: sevtest.CertOverride{Extensions: sevtest.CustomExtensions(tcb, make([]byte, abi.ChipIDSize), "", "Milan-B0")},
		VlekCustom: sevtest.CertOverride{Extensions: sevtest.CustomExtensions(tcb, nil, "teegate-test", "Milan-B0")},
	}
	s, err := b.TestOnlyCertChain()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pemOf(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// signedReport makes a report with the given TCBs and signer, signed by s.
func signedReport(t testing.TB, s *sevtest.AmdSigner, signer abi.ReportSigner, reported, committed kds.TCBParts) []byte {
	t.Helper()
	raw := sevtest.CreateRawReport(&sevtest.TestReportOptions{ReportData: bytes.Repeat([]byte{0xab}, 64), SignerInfo: abi.SignerInfo{SigningKey: signer}})
	r := raw[:abi.ReportSize]
	put := func(off int, p kds.TCBParts) {
		v, err := kds.ComposeTCBParts(p)
		if err != nil {
			t.Fatal(err)
		}
		binary.LittleEndian.PutUint64(r[off:off+8], uint64(v))
	}
	put(0x38, committed) // CURRENT_TCB
	put(0x180, reported) // REPORTED_TCB
	put(0x1E0, committed)
	R, S, err := s.Sign(abi.SignedComponent(r))
	if err != nil {
		t.Fatal(err)
	}
	if err := abi.SetSignature(R, S, r); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(r)
}

func TestCommittedTCBBelowMinimum(t *testing.T) {
	good := kds.TCBParts{BlSpl: 4, SnpSpl: 24, UcodeSpl: 219}
	s := signerWith(t, good)
	chain := pemOf(s.Ask, s.Ark)
	min := map[string]TCBParts{"Milan": milanMinimum}
	for _, tc := range []struct {
		name      string
		committed kds.TCBParts
		want      string
	}{
		{"reported and committed meet it", good, claims.TCBUpToDate},
		{"committed below (rollback possible)", kds.TCBParts{BlSpl: 4, SnpSpl: 23, UcodeSpl: 219}, claims.TCBOutOfDate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := signedReport(t, s, abi.VcekReportSigner, good, tc.committed)
			c, err := Verify(context.Background(), rep, Options{VCEK: s.Vcek.Raw, CertChain: chain, Now: verifyTime, MinimumTCB: min})
			if err != nil {
				t.Fatal(err)
			}
			if c.TCB.Status != tc.want {
				t.Fatalf("status %q, want %q", c.TCB.Status, tc.want)
			}
		})
	}
}

// TestVLEK verifies a VLEK-signed report through the ASVK, and refuses it
// under a chain without an ASVK or with the VCEK's intermediate.
func TestVLEK(t *testing.T) {
	tcb := kds.TCBParts{BlSpl: 4, SnpSpl: 24, UcodeSpl: 219}
	s := signerWith(t, tcb)
	rep := signedReport(t, s, abi.VlekReportSigner, tcb, tcb)
	withTable := append(bytes.Clone(rep), certTable(t, map[string][]byte{abi.VlekGUID: s.Vlek.Raw})...)
	for _, tc := range []struct {
		name   string
		report []byte
		opts   Options
		want   error
	}{
		{"VLEK option, ASVK chain", rep, Options{VCEK: s.Vlek.Raw, CertChain: pemOf(s.Asvk, s.Ark), Now: verifyTime}, nil},
		{"VLEK in the certificate table", withTable, Options{CertChain: pemOf(s.Asvk, s.Ark), Now: verifyTime}, nil},
		{"chain with ASK and ASVK", rep, Options{VCEK: s.Vlek.Raw, CertChain: pemOf(s.Ask, s.Asvk, s.Ark), Now: verifyTime}, nil},
		{"chain without ASVK", rep, Options{VCEK: s.Vlek.Raw, CertChain: pemOf(s.Ask, s.Ark), Now: verifyTime}, ErrCertChain},
		{"test chain not trusted by default", rep, Options{VCEK: s.Vlek.Raw, Now: verifyTime}, ErrCertChain},
		{"VLEK given where a VCEK signed", signedReport(t, s, abi.VcekReportSigner, tcb, tcb), Options{VCEK: s.Vlek.Raw, CertChain: pemOf(s.Ask, s.Asvk, s.Ark), Now: verifyTime}, ErrCertChain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Verify(context.Background(), tc.report, tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.want == nil && (c.TCB.SNP == nil || c.TCB.SNP.Signer != "vlek") {
				t.Fatalf("claims tcb = %+v", c.TCB)
			}
		})
	}
}

// TestEmbeddedRootsHaveASVK: the real ASVK chains (KDS /vlek/v1/{line}/
// cert_chain, as go-sev-guest ships them) are among the default roots, and
// the real Milan VLEK chain parses to the embedded one.
func TestEmbeddedRootsHaveASVK(t *testing.T) {
	lines := map[string]bool{}
	for _, c := range Roots() {
		if c.ASK == nil || c.ASVK == nil || c.ARK == nil {
			t.Fatalf("%s: incomplete chain", c.ProductLine)
		}
		lines[c.ProductLine] = true
	}
	if !lines["Milan"] || !lines["Genoa"] || !lines["Turin"] {
		t.Fatalf("product lines %v", lines)
	}
	kdsVLEK, err := ParseChain(read(t, "ask_ark_milan_vlek_kds.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range Roots() {
		if c.ProductLine == "Milan" && !c.ASVK.Equal(kdsVLEK.ASVK) {
			t.Fatal("embedded Milan ASVK differs from KDS's")
		}
	}
}

func TestParseChainErrors(t *testing.T) {
	s := signerWith(t, kds.TCBParts{})
	milan := read(t, "ask_ark_milan_vcek_kds.pem")
	for name, in := range map[string][]byte{
		"empty":              nil,
		"not PEM":            []byte("junk"),
		"trailing data":      append(bytes.Clone(milan), "x"...),
		"private key block":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
		"ASK only":           firstPEM(t, milan),
		"ARK only":           pemOf(s.Ark),
		"two ARKs":           append(bytes.Clone(milan), pemOf(s.Ark)...),
		"ASK of another ARK": append(pemOf(s.Ask), firstPEM(t, bytes.SplitAfter(milan, []byte("-----END CERTIFICATE-----\n"))[1])...),
		"too long":           bytes.Repeat([]byte(" "), maxChainPEM+1),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseChain(in); !errors.Is(err, ErrCertChain) {
				t.Fatalf("err = %v, want ErrCertChain", err)
			}
		})
	}
}

// crlOf makes a DER CRL signed by the test ARK.
func crlOf(t testing.TB, s *sevtest.AmdSigner, this, next time.Time, revoked ...*big.Int) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: this, NextUpdate: next, SignatureAlgorithm: x509.SHA384WithRSAPSS}
	for _, sn := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: sn, RevocationTime: this})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, s.Ark, s.Keys.Ark)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestCRL(t *testing.T) {
	tcb := kds.TCBParts{BlSpl: 4, SnpSpl: 24, UcodeSpl: 219}
	s, other := signerWith(t, tcb), signerWith(t, tcb)
	// Different ARK keys for "other": reuse of default keys would make the
	// signatures verify, so give it fresh ones.
	other = func() *sevtest.AmdSigner {
		b := &sevtest.AmdSignerBuilder{ProductName: "Milan-B0", ArkCreationTime: verifyTime.Add(-time.Hour), AskCreationTime: verifyTime.Add(-time.Hour), VcekCreationTime: verifyTime.Add(-time.Hour)}
		keys := sevtest.DefaultAmdKeys()
		k, err := rsaKey()
		if err != nil {
			t.Fatal(err)
		}
		keys.Ark = k
		b.Keys = keys
		o, err := b.TestOnlyCertChain()
		if err != nil {
			t.Fatal(err)
		}
		return o
	}()
	rep := signedReport(t, s, abi.VcekReportSigner, tcb, tcb)
	base := Options{VCEK: s.Vcek.Raw, CertChain: pemOf(s.Ask, s.Ark), Now: verifyTime}
	fresh := func(revoked ...*big.Int) []byte {
		return crlOf(t, s, verifyTime.Add(-time.Hour), verifyTime.Add(24*time.Hour), revoked...)
	}
	with := func(crls [][]byte, require bool) Options {
		o := base
		o.CRLs, o.RequireCRL = crls, require
		return o
	}
	for _, tc := range []struct {
		name string
		opts Options
		want error
	}{
		{"fresh CRL, nothing revoked", with([][]byte{fresh(big.NewInt(12345))}, true), nil},
		{"ASK revoked", with([][]byte{fresh(s.Ask.SerialNumber)}, false), ErrRevoked},
		{"CRL past nextUpdate", with([][]byte{crlOf(t, s, verifyTime.Add(-48*time.Hour), verifyTime.Add(-time.Hour))}, false), ErrCRLExpired},
		{"CRL not yet valid", with([][]byte{crlOf(t, s, verifyTime.Add(time.Hour), verifyTime.Add(48*time.Hour))}, false), ErrCRLExpired},
		{"CRL required, none given", with(nil, true), ErrCRL},
		{"CRL of another ARK only, required", with([][]byte{crlOf(t, other, verifyTime.Add(-time.Hour), verifyTime.Add(time.Hour), s.Ask.SerialNumber)}, true), ErrCRL},
		{"CRL of another ARK only, not required", with([][]byte{crlOf(t, other, verifyTime.Add(-time.Hour), verifyTime.Add(time.Hour), s.Ask.SerialNumber)}, false), nil},
		{"CRL not DER", with([][]byte{[]byte("junk")}, false), ErrCRL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(context.Background(), rep, tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzParseChain(f *testing.F) {
	f.Add(read(f, "ask_ark_milan_vcek_kds.pem"))
	f.Add(read(f, "ask_ark_milan_vlek_kds.pem"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseChain(b)
		if err != nil {
			if !errors.Is(err, ErrCertChain) {
				t.Fatalf("error %v does not wrap ErrCertChain", err)
			}
			return
		}
		if c.ARK == nil || (c.ASK == nil && c.ASVK == nil) {
			t.Fatal("incomplete chain accepted")
		}
	})
}

func FuzzParseCRL(f *testing.F) {
	s := signerWith(f, kds.TCBParts{})
	f.Add(crlOf(f, s, verifyTime, verifyTime.Add(time.Hour), big.NewInt(7)))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseCRL(b); err != nil && !errors.Is(err, ErrCRL) {
			t.Fatalf("error %v does not wrap ErrCRL", err)
		}
	})
}

func rsaKey() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) }

// TestVCEKCandidates: a report without a certificate table verifies with
// the matching VCEK among candidates (a collateral directory's), and not
// with non-matching ones.
func TestVCEKCandidates(t *testing.T) {
	report, vcek := read(t, "attestation_milan.bin"), read(t, "vcek_milan.der")
	s := signerWith(t, kds.TCBParts{BlSpl: 4, SnpSpl: 24, UcodeSpl: 219})
	if _, err := Verify(context.Background(), report, Options{VCEKCandidates: [][]byte{[]byte("junk"), s.Vcek.Raw, vcek}, Now: verifyTime}); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(context.Background(), report, Options{VCEKCandidates: [][]byte{s.Vcek.Raw}, Now: verifyTime}); !errors.Is(err, ErrMissingCertificate) {
		t.Fatalf("err = %v, want ErrMissingCertificate", err)
	}
}
