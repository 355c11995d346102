package nvidia

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"
)

// TestBlackwellFWIDExtension pins where the FWID of a real Blackwell leaf
// lives: under 2.23.133.5.4.1.1 (a DiceTcbInfo), not under Hopper's
// 2.23.133.5.4.1, and equal to the report's opaque FWID.
func TestBlackwellFWIDExtension(t *testing.T) {
	certs, err := ParseCertChain(readTestdata(t, "sdk_blackwell_chain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf := certs[0]
	if got := archFromCert(leaf); got != ArchBlackwell {
		t.Fatalf("arch %q", got)
	}
	for _, ext := range leaf.Extensions {
		if ext.Id.Equal(OIDDICETcbInfo) {
			t.Fatal("Blackwell leaf carries the Hopper FWID extension")
		}
	}
	fwid, err := certFWID(leaf, ArchBlackwell)
	if err != nil || len(fwid) != 48 {
		t.Fatalf("certFWID = %x, %v", fwid, err)
	}
	// Read the Hopper way, the Blackwell leaf has no FWID: that is the
	// mismatch the issue reported.
	if h, err := certFWID(leaf, ArchHopper); err != nil || h != nil {
		t.Fatalf("Hopper-way FWID = %x, %v", h, err)
	}
	rep, err := ParseReport(readHex(t, "sdk_blackwell_report.hex"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rep.FWID(), fwid) {
		t.Fatalf("report FWID %x, leaf %x", rep.FWID(), fwid)
	}
}

// TestBlackwellFWIDFlip checks the FWID comparison itself. Flipping a FWID
// byte of the genuine report breaks its signature first, so the test
// re-issues the genuine Blackwell leaf (same extensions, one FWID byte
// flipped or not) under a test root and re-signs the genuine report with
// the new leaf key: unflipped verifies, flipped fails with ErrFWIDMismatch.
func TestBlackwellFWIDFlip(t *testing.T) {
	real := readHex(t, "sdk_blackwell_report.hex")
	certs, err := ParseCertChain(readTestdata(t, "sdk_blackwell_chain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	fwid, _ := certFWID(certs[0], ArchBlackwell)
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, flip := range []bool{false, true} {
		rootKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		leafKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		rootTmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
		rootDER, _ := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
		root, _ := x509.ParseCertificate(rootDER)
		var exts []pkix.Extension
		for _, e := range certs[0].Extensions {
			if !e.Id.Equal(OIDDICETcbInfoBlackwell) {
				continue
			}
			v := bytes.Clone(e.Value)
			if flip {
				i := bytes.Index(v, fwid)
				if i < 0 {
					t.Fatal("FWID not found in the extension")
				}
				v[i+7] ^= 0x01
			}
			exts = append(exts, pkix.Extension{Id: e.Id, Value: v})
		}
		leafTmpl := &x509.Certificate{
			SerialNumber: big.NewInt(2), Subject: certs[0].Subject,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			ExtraExtensions: exts,
		}
		leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, root, &leafKey.PublicKey, rootKey)
		if err != nil {
			t.Fatal(err)
		}
		chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})
		report := resign(t, real, leafKey)
		roots := x509.NewCertPool()
		roots.AddCert(root)
		g, err := Verify(context.Background(), Evidence{Report: report, Chain: chain, Arch: "BLACKWELL"}, Options{Roots: roots, Now: now})
		switch {
		case flip && !errors.Is(err, ErrFWIDMismatch):
			t.Fatalf("flipped FWID: err = %v, want ErrFWIDMismatch", err)
		case !flip && err != nil:
			t.Fatalf("unflipped: %v", err)
		case !flip && g.Arch != ArchBlackwell:
			t.Fatalf("arch %q", g.Arch)
		}
	}
}

// resign replaces the report's signature with one by key.
func resign(t testing.TB, report []byte, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	out := bytes.Clone(report)
	signed := out[:len(out)-SignatureSize]
	sum := sha512.Sum384(signed)
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(sig, &rs); err != nil {
		t.Fatal(err)
	}
	rs.R.FillBytes(out[len(signed) : len(signed)+SignatureSize/2])
	rs.S.FillBytes(out[len(signed)+SignatureSize/2:])
	return out
}
