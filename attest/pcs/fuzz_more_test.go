package pcs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"reflect"
	"testing"

	"github.com/teegate/teegate/attest/pcs"
	"github.com/teegate/teegate/attest/tdx"
)

var collateralFiles = []string{"tdx_quote_v4_collateral.json", "tdx_quote_v5_outdated_collateral.json", "sgx_quote_v3_collateral.json"}

// quoteParts parses the v4 quote of testdata, for seeds.
func quoteParts(t testing.TB) *tdx.Quote {
	t.Helper()
	q, err := tdx.ParseQuote(readFile(t, "tdx_quote_v4.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func pckChainPEM(t testing.TB) []byte {
	t.Helper()
	raw := readFile(t, "tdx_quote_v4.bin")
	return raw[bytes.Index(raw, []byte("-----BEGIN")):]
}

// FuzzParseCollateralJSON: never panics, fails only with
// ErrCollateralFormat, and what it accepts writes back out (MarshalJSON) to
// a file that parses to the same collateral, byte for byte.
func FuzzParseCollateralJSON(f *testing.F) {
	for _, name := range collateralFiles {
		f.Add(readFile(f, name))
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"tcb_info":"{}","tcb_info_signature":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := pcs.ParseCollateralJSON(b)
		if err != nil {
			if !errors.Is(err, pcs.ErrCollateralFormat) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		once, err := c.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		c2, err := pcs.ParseCollateralJSON(once)
		if err != nil {
			t.Fatalf("written collateral does not parse: %v", err)
		}
		twice, err := c2.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(once, twice) {
			t.Fatalf("round trip changed the collateral:\n%s\n%s", once, twice)
		}
	})
}

// FuzzParseCertChain: never panics, fails only with ErrCollateralFormat,
// and returns at least one certificate, which re-encoded as PEM parse to
// the same certificates.
func FuzzParseCertChain(f *testing.F) {
	for _, name := range []string{"pck_crl_issuer_chain.pem", "tcb_info_issuer_chain.pem", "qe_identity_issuer_chain.pem"} {
		b := readFile(f, name)
		f.Add(b)
		f.Add([]byte(url.PathEscape(string(b)))) // the PCS header form
	}
	f.Add(pckChainPEM(f)) // ends in the quote's NUL
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n%2D\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := pcs.ParseCertChain(b)
		if err != nil {
			if !errors.Is(err, pcs.ErrCollateralFormat) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(certs) == 0 {
			t.Fatal("accepted a chain of no certificates")
		}
		var again []byte
		for _, c := range certs {
			again = append(again, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		certs2, err := pcs.ParseCertChain(again)
		if err != nil || len(certs2) != len(certs) {
			t.Fatalf("re-encoded chain: %d certificates, err %v; want %d", len(certs2), err, len(certs))
		}
		for i := range certs {
			if !certs[i].Equal(certs2[i]) {
				t.Fatalf("certificate %d changed in the round trip", i)
			}
		}
	})
}

// FuzzParseEnclaveReport: never panics, refuses every length but
// EnclaveReportSize with ErrQuoteFormat, and Marshal gives back exactly
// the bytes it parsed.
func FuzzParseEnclaveReport(f *testing.F) {
	q := quoteParts(f)
	f.Add(q.Certification.QEReport.Marshal())
	f.Add(make([]byte, pcs.EnclaveReportSize))
	f.Add(make([]byte, pcs.EnclaveReportSize-1))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := pcs.ParseEnclaveReport(b)
		if err != nil {
			if !errors.Is(err, pcs.ErrQuoteFormat) || len(b) == pcs.EnclaveReportSize {
				t.Fatalf("%d bytes: %v", len(b), err)
			}
			return
		}
		if !bytes.Equal(r.Marshal(), b) {
			t.Fatal("Marshal differs from the parsed bytes")
		}
		if r.Debug() != (b[48]&pcs.AttributeDebug != 0) {
			t.Fatal("Debug does not read ATTRIBUTES bit 1")
		}
	})
}

// FuzzParseP256RawKey: never panics, accepts only 64-byte points on P-256,
// and RawP256Key gives back the bytes it parsed.
func FuzzParseP256RawKey(f *testing.F) {
	q := quoteParts(f)
	f.Add(q.AttestationKey[:])
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	raw, err := pcs.RawP256Key(&k.PublicKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add(make([]byte, 64)) // (0, 0) is not on the curve
	f.Add(raw[:63])
	f.Fuzz(func(t *testing.T, b []byte) {
		pub, err := pcs.ParseP256RawKey(b)
		if err != nil {
			return
		}
		if len(b) != 64 || pub.Curve != elliptic.P256() {
			t.Fatalf("accepted a %d-byte key", len(b))
		}
		back, err := pcs.RawP256Key(pub)
		if err != nil || !bytes.Equal(back, b) {
			t.Fatalf("round trip: %x, %v", back, err)
		}
	})
}

// FuzzParsePCKExtensions: never panics on any SGX extension value, fails
// only with ErrPCKChain, and what it accepts MarshalPCKExtensions encodes
// to a value that parses to the same extensions.
func FuzzParsePCKExtensions(f *testing.F) {
	chain, err := pcs.ParseCertChain(pckChainPEM(f))
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range chain[0].Extensions {
		if e.Id.Equal(pcs.OIDSGXExtensions) {
			f.Add(e.Value)
		}
	}
	ext, err := pcs.ParsePCKExtensions(chain[0])
	if err != nil {
		f.Fatal(err)
	}
	der, err := pcs.MarshalPCKExtensions(ext)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der)
	f.Add([]byte{0x30, 0x00})
	withExt := func(v []byte) *x509.Certificate {
		return &x509.Certificate{Extensions: []pkix.Extension{{Id: pcs.OIDSGXExtensions, Value: v}}}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := pcs.ParsePCKExtensions(withExt(b))
		if err != nil {
			if !errors.Is(err, pcs.ErrPCKChain) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		der, err := pcs.MarshalPCKExtensions(e)
		if err != nil {
			t.Fatalf("accepted extensions do not encode: %v", err)
		}
		e2, err := pcs.ParsePCKExtensions(withExt(der))
		if err != nil {
			t.Fatalf("encoded extensions do not parse: %v", err)
		}
		if !reflect.DeepEqual(e, e2) {
			t.Fatalf("round trip changed the extensions:\n%+v\n%+v", e, e2)
		}
	})
}
