package sim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

// rootPEM encodes r the way LoadOrCreateRoot stores it.
func rootPEM(t testing.TB, r *Root) (certPEM, keyPEM []byte) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(r.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// FuzzParseRoot: the stored root files never panic the reader, and a root
// it accepts is a certificate with its own ECDSA key that stores and
// reads back unchanged. Seeds are the files LoadOrCreateRoot writes, and
// near misses: another root's key, a key of another curve, swapped blocks.
func FuzzParseRoot(f *testing.F) {
	dir := f.TempDir()
	r, err := LoadOrCreateRoot(dir)
	if err != nil {
		f.Fatal(err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, RootCertFile))
	if err != nil {
		f.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, RootKeyFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(certPEM, keyPEM)
	other, err := NewRoot()
	if err != nil {
		f.Fatal(err)
	}
	_, otherKey := rootPEM(f, other)
	f.Add(certPEM, otherKey)
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	_, p256Key := rootPEM(f, &Root{Cert: r.Cert, Key: p256})
	f.Add(certPEM, p256Key)
	f.Add(keyPEM, certPEM)
	f.Add(certPEM[:len(certPEM)/2], keyPEM)
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		got, err := parseRoot(certPEM, keyPEM)
		if err != nil {
			if got != nil {
				t.Fatal("root returned with an error")
			}
			return
		}
		key, ok := got.Key.(*ecdsa.PrivateKey)
		if !ok || !key.PublicKey.Equal(got.Cert.PublicKey) {
			t.Fatal("accepted a key that is not the certificate's")
		}
		c2, k2 := rootPEM(t, got)
		again, err := parseRoot(c2, k2)
		if err != nil {
			t.Fatalf("stored form of an accepted root: %v", err)
		}
		if !bytes.Equal(again.Cert.Raw, got.Cert.Raw) || !again.Key.(*ecdsa.PrivateKey).Equal(key) {
			t.Fatal("root changed when stored and read back")
		}
	})
}
