package simtdx

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/tdx"
)

func simRoot(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "teegate simulated root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func TestSimulatedQuoteVerifies(t *testing.T) {
	root, key := simRoot(t)
	q, err := NewQuoter(root, key)
	if err != nil {
		t.Fatal(err)
	}
	var rd [64]byte
	copy(rd[:], "teegate report data")
	raw, err := q.Quote(rd)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	c, err := tdx.Verify(context.Background(), raw, tdx.Options{TrustedRoots: pool})
	if err != nil {
		t.Fatal(err)
	}
	mrtd := sha512.Sum384([]byte("teegate simulated mrtd"))
	if c.TEE != claims.TEETDX || c.Measurements["mrtd"] != hex.EncodeToString(mrtd[:]) || c.ReportData != hex.EncodeToString(rd[:]) || c.Debug {
		t.Fatalf("claims %+v", c)
	}
	if _, err := tdx.Verify(context.Background(), raw, tdx.Options{}); !errors.Is(err, tdx.ErrPCKChain) {
		t.Fatalf("Intel root accepted a simulated quote: %v", err)
	}
	other, _ := simRoot(t)
	otherPool := x509.NewCertPool()
	otherPool.AddCert(other)
	if _, err := tdx.Verify(context.Background(), raw, tdx.Options{TrustedRoots: otherPool}); !errors.Is(err, tdx.ErrPCKChain) {
		t.Fatalf("another sim root accepted: %v", err)
	}
	// The quote is a real-format quote: it parses and re-encodes.
	pq, err := tdx.ParseQuote(raw)
	if err != nil || string(pq.Marshal()) != string(raw) {
		t.Fatalf("round trip: %v", err)
	}
	raw[60] ^= 1 // header user data
	if _, err := tdx.Verify(context.Background(), raw, tdx.Options{TrustedRoots: pool}); !errors.Is(err, tdx.ErrQuoteSignature) {
		t.Fatalf("got %v", err)
	}
}

func TestCustomMeasurements(t *testing.T) {
	root, key := simRoot(t)
	m := DefaultMeasurements()
	m.TDAttributes[0] = 1
	m.RTMR[3][0] = 0xaa
	q, err := NewQuoter(root, key, m)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := q.Quote([64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	c, err := tdx.Verify(context.Background(), raw, tdx.Options{TrustedRoots: pool})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Debug || c.Measurements["rtmr3"][:2] != "aa" {
		t.Fatalf("claims %+v", c)
	}
	if _, err := NewQuoter(root, key, m, m); err == nil {
		t.Fatal("two Measurements accepted")
	}
	if _, err := NewQuoter(nil, key); err == nil {
		t.Fatal("nil root accepted")
	}
}

func BenchmarkQuote(b *testing.B) {
	root, key := simRoot(b)
	q, err := NewQuoter(root, key)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := q.Quote([64]byte{}); err != nil {
			b.Fatal(err)
		}
	}
}
