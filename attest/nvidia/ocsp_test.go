package nvidia

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// testPKI is a three-level device chain in NVIDIA's shape (root, a CA, a
// device leaf carrying the genuine Blackwell leaf's extensions) plus an OCSP
// responder certificate issued by the root, and the genuine Blackwell
// report re-signed by the leaf.
type testPKI struct {
	root, ca, leaf, responder        *x509.Certificate
	rootKey, caKey, leafKey, respKey *ecdsa.PrivateKey
	chainPEM, report                 []byte
	roots                            *x509.CertPool
	now                              time.Time
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{now: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	p.rootKey, p.caKey, p.leafKey, p.respKey = key(), key(), key(), key()
	issue := func(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, priv *ecdsa.PrivateKey) *x509.Certificate {
		return p.issue(t, tmpl, parent, pub, priv)
	}
	validity := func(sn int64, cn string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(sn), Subject: pkix.Name{CommonName: cn},
			NotBefore: p.now.Add(-24 * time.Hour), NotAfter: p.now.Add(365 * 24 * time.Hour)}
	}
	rt := validity(1, "test Device Identity CA")
	rt.IsCA, rt.BasicConstraintsValid, rt.KeyUsage = true, true, x509.KeyUsageCertSign|x509.KeyUsageCRLSign
	p.root = issue(rt, rt, &p.rootKey.PublicKey, p.rootKey)
	ct := validity(2, "test GB100 Identity")
	ct.IsCA, ct.BasicConstraintsValid, ct.KeyUsage = true, true, x509.KeyUsageCertSign
	p.ca = issue(ct, p.root, &p.caKey.PublicKey, p.rootKey)
	real, err := ParseCertChain(readTestdata(t, "sdk_blackwell_chain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	lt := validity(3, "")
	lt.Subject = real[0].Subject
	for _, e := range real[0].Extensions {
		if e.Id.Equal(OIDDICETcbInfoBlackwell) {
			lt.ExtraExtensions = append(lt.ExtraExtensions, pkix.Extension{Id: e.Id, Value: e.Value})
		}
	}
	p.leaf = issue(lt, p.ca, &p.leafKey.PublicKey, p.caKey)
	rs := validity(4, "test OCSP responder")
	rs.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}
	p.responder = issue(rs, p.root, &p.respKey.PublicKey, p.rootKey)
	for _, c := range []*x509.Certificate{p.leaf, p.ca, p.root} {
		p.chainPEM = append(p.chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	p.report = resign(t, readHex(t, "sdk_blackwell_report.hex"), p.leafKey)
	p.roots = x509.NewCertPool()
	p.roots.AddCert(p.root)
	return p
}

func (p *testPKI) issue(t testing.TB, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, priv *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// response makes a real-format OCSP response for cert, signed by signer
// (the issuer itself, or a delegated responder when responder is set).
func (p *testPKI) response(t testing.TB, cert, issuer *x509.Certificate, signer crypto.Signer, responder *x509.Certificate, status int, this, next time.Time) []byte {
	t.Helper()
	tmpl := ocsp.Response{Status: status, SerialNumber: cert.SerialNumber, ThisUpdate: this, NextUpdate: next, Certificate: responder}
	if status == ocsp.Revoked {
		tmpl.RevokedAt, tmpl.RevocationReason = this, ocsp.KeyCompromise
	}
	der, err := ocsp.CreateResponse(issuer, responderOr(responder, issuer), tmpl, signer)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func responderOr(r, issuer *x509.Certificate) *x509.Certificate {
	if r != nil {
		return r
	}
	return issuer
}

func TestVerifyOCSP(t *testing.T) {
	p := newTestPKI(t)
	fresh := func(status int) []byte {
		return p.response(t, p.ca, p.root, p.rootKey, nil, status, p.now.Add(-time.Hour), p.now.Add(24*time.Hour))
	}
	hold := func() []byte {
		der, err := ocsp.CreateResponse(p.root, p.root, ocsp.Response{Status: ocsp.Revoked, SerialNumber: p.ca.SerialNumber,
			ThisUpdate: p.now.Add(-time.Hour), NextUpdate: p.now.Add(time.Hour), RevokedAt: p.now.Add(-time.Hour), RevocationReason: ocsp.CertificateHold}, p.rootKey)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	// A responder without the OCSP-signing EKU, and one issued by the CA
	// (not by the CA certificate's issuer).
	noEKU := p.issue(t, &x509.Certificate{SerialNumber: big.NewInt(5), Subject: pkix.Name{CommonName: "no EKU"},
		NotBefore: p.now.Add(-time.Hour), NotAfter: p.now.Add(time.Hour)}, p.root, &p.respKey.PublicKey, p.rootKey)
	wrongIssuer := p.issue(t, &x509.Certificate{SerialNumber: big.NewInt(6), Subject: pkix.Name{CommonName: "CA's responder"},
		NotBefore: p.now.Add(-time.Hour), NotAfter: p.now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}}, p.ca, &p.respKey.PublicKey, p.caKey)
	for _, tc := range []struct {
		name    string
		resps   [][]byte
		require bool
		hold    bool
		want    error
	}{
		{"no responses, not required", nil, false, false, nil},
		{"good, signed by the issuer", [][]byte{fresh(ocsp.Good)}, true, false, nil},
		{"good, delegated responder", [][]byte{p.response(t, p.ca, p.root, p.respKey, p.responder, ocsp.Good, p.now.Add(-time.Hour), p.now.Add(time.Hour))}, true, false, nil},
		{"revoked", [][]byte{fresh(ocsp.Revoked)}, false, false, ErrCertRevoked},
		{"certificate hold", [][]byte{hold()}, false, false, ErrCertRevoked},
		{"certificate hold allowed", [][]byte{hold()}, false, true, nil},
		{"unknown", [][]byte{fresh(ocsp.Unknown)}, false, false, ErrOCSP},
		{"past nextUpdate", [][]byte{p.response(t, p.ca, p.root, p.rootKey, nil, ocsp.Good, p.now.Add(-48*time.Hour), p.now.Add(-time.Hour))}, false, false, ErrOCSPStale},
		{"thisUpdate in the future", [][]byte{p.response(t, p.ca, p.root, p.rootKey, nil, ocsp.Good, p.now.Add(time.Hour), p.now.Add(48*time.Hour))}, false, false, ErrOCSPStale},
		{"signed by an untrusted key", [][]byte{p.response(t, p.ca, p.root, otherKey, nil, ocsp.Good, p.now.Add(-time.Hour), p.now.Add(time.Hour))}, false, false, ErrOCSP},
		{"required but missing", nil, true, false, ErrOCSP},
		{"delegated responder without the OCSP-signing EKU", [][]byte{p.response(t, p.ca, p.root, p.respKey, noEKU, ocsp.Good, p.now.Add(-time.Hour), p.now.Add(time.Hour))}, false, false, ErrOCSP},
		{"delegated responder not issued by the issuer", [][]byte{p.response(t, p.ca, p.root, p.respKey, wrongIssuer, ocsp.Good, p.now.Add(-time.Hour), p.now.Add(time.Hour))}, false, false, ErrOCSP},
		{"response for another serial only, required", [][]byte{p.response(t, p.leaf, p.ca, p.caKey, nil, ocsp.Good, p.now.Add(-time.Hour), p.now.Add(time.Hour))}, true, false, ErrOCSP},
		{"not DER", [][]byte{[]byte("junk")}, false, false, ErrOCSP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(context.Background(), Evidence{Report: p.report, Chain: p.chainPEM}, Options{
				Roots: p.roots, Now: p.now, OCSPResponses: tc.resps, RequireOCSP: tc.require, AllowCertificateHold: tc.hold})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestOCSPSkipsDeviceLeaf: the device-issued leaf needs no response even
// when OCSP is required; a revoked leaf response is still honored by
// CheckOCSP for chains that include the leaf (RIM signer chains).
func TestOCSPSkipsDeviceLeaf(t *testing.T) {
	p := newTestPKI(t)
	path := []*x509.Certificate{p.leaf, p.ca, p.root}
	good := p.response(t, p.ca, p.root, p.rootKey, nil, ocsp.Good, p.now.Add(-time.Hour), p.now.Add(time.Hour))
	revokedLeaf := p.response(t, p.leaf, p.ca, p.caKey, nil, ocsp.Revoked, p.now.Add(-time.Hour), p.now.Add(time.Hour))
	if err := CheckOCSP(path, true, OCSPOptions{Responses: [][]byte{good}, Now: p.now, Require: true}); err != nil {
		t.Fatal(err)
	}
	if err := CheckOCSP(path, false, OCSPOptions{Responses: [][]byte{good, revokedLeaf}, Now: p.now, Require: true}); !errors.Is(err, ErrCertRevoked) {
		t.Fatalf("err = %v, want ErrCertRevoked", err)
	}
}

func FuzzParseOCSPResponse(f *testing.F) {
	p := newTestPKI(f)
	f.Add(p.response(f, p.ca, p.root, p.rootKey, nil, ocsp.Good, p.now, p.now.Add(time.Hour)))
	f.Add(p.response(f, p.ca, p.root, p.respKey, p.responder, ocsp.Revoked, p.now, p.now.Add(time.Hour)))
	f.Add([]byte{0x30, 0x03, 0x0a, 0x01, 0x06})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseOCSPResponse(b)
		if err != nil {
			if !errors.Is(err, ErrOCSP) {
				t.Fatalf("error %v does not wrap ErrOCSP", err)
			}
			return
		}
		if r.SerialNumber == nil {
			t.Fatal("response without serial accepted")
		}
		_ = CheckOCSP([]*x509.Certificate{p.leaf, p.ca, p.root}, true, OCSPOptions{Responses: [][]byte{b}, Now: p.now})
	})
}

// TestRIMSignerOCSPRequired: with OCSP required, a RIM whose signer chain
// has no responses fails by name (RIM chains are checked from the signer
// up, unlike device chains).
func TestRIMSignerOCSPRequired(t *testing.T) {
	rep, err := ParseReport(readHex(t, "sdk_hopper_report.hex"))
	if err != nil {
		t.Fatal(err)
	}
	rim := mustRIM(t, "1010_0205_862_9600740020_PROD.swidtag")
	opts := Options{RIMRoots: rimRoots(t), RIMs: []*RIM{rim}, RequireOCSP: true}
	if _, err := checkRIMs(rep, ArchHopper, opts, timeGPU); !errors.Is(err, ErrOCSP) || !strings.Contains(err.Error(), "RIM 0 signer") {
		t.Fatalf("err = %v, want ErrOCSP for the RIM signer", err)
	}
	opts.RequireOCSP = false
	if _, err := checkRIMs(rep, ArchHopper, opts, timeGPU); err != nil {
		t.Fatalf("not required: %v", err)
	}
}
