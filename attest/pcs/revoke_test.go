package pcs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"
)

func TestPCKRevocation(t *testing.T) {
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	mk := func(serial int64, cn string, ca bool, parent *x509.Certificate, pub, signer any) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), BasicConstraintsValid: true, IsCA: ca,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rk, ck, lk := key(), key(), key()
	root := mk(1, "root", true, nil, &rk.PublicKey, rk)
	ca := mk(2, "ca", true, root, &ck.PublicKey, rk)
	leaf := mk(77, "leaf", false, ca, &lk.PublicKey, ck)
	crl := func(issuer *x509.Certificate, k *ecdsa.PrivateKey, serial int64) *x509.RevocationList {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(time.Hour),
			RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(serial), RevocationTime: now}}}, issuer, k)
		if err != nil {
			t.Fatal(err)
		}
		l, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	path := []*x509.Certificate{leaf, ca, root}
	for _, tc := range []struct {
		name string
		c    *Collateral
		want error
	}{
		{"not listed", &Collateral{PCKCRL: crl(ca, ck, 5), RootCRL: crl(root, rk, 5)}, nil},
		{"leaf revoked", &Collateral{PCKCRL: crl(ca, ck, 77)}, ErrCertificateRevoked},
		{"CA revoked", &Collateral{RootCRL: crl(root, rk, 2)}, ErrCertificateRevoked},
		{"CRL forged", &Collateral{PCKCRL: func() *x509.RevocationList { l := crl(ca, ck, 5); l.Signature[10] ^= 1; return l }()}, ErrCollateralSignature},
		{"CRL of another CA", &Collateral{PCKCRL: crl(root, rk, 5)}, ErrCollateralMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkPCKRevocation(tc.c, path); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}
