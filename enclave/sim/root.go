package sim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Files in the root directory.
const (
	RootCertFile = "sim-root.pem"
	RootKeyFile  = "sim-root-key.pem"
)

// RootCommonName is the subject of every simulated root.
const RootCommonName = "teegate SIMULATED root — not for production"

// Root is the simulated machine's root CA.
type Root struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewRoot creates an ECDSA P-384 self-signed root. Its validity spans
// 2020–9999 like the simulated device certificates under it, so simulated
// evidence never expires by surprise.
func NewRoot() (*Root, error) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("creating simulated root: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("creating simulated root: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: RootCommonName, Organization: []string{"teegate simulated TEE"}},
		NotBefore:             time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating simulated root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("creating simulated root: %w", err)
	}
	return &Root{Cert: cert, Key: key}, nil
}

// LoadOrCreateRoot reads the root from dir, or creates and stores one there
// on first start (directory 0700, key 0600). A directory holding only one of
// the two files is an error rather than a silent new identity.
func LoadOrCreateRoot(dir string) (*Root, error) {
	certPath, keyPath := filepath.Join(dir, RootCertFile), filepath.Join(dir, RootKeyFile)
	certPEM, cerr := os.ReadFile(certPath)
	keyPEM, kerr := os.ReadFile(keyPath)
	switch {
	case cerr == nil && kerr == nil:
		return parseRoot(certPEM, keyPEM)
	case errors.Is(cerr, fs.ErrNotExist) && errors.Is(kerr, fs.ErrNotExist):
	case cerr != nil && !errors.Is(cerr, fs.ErrNotExist):
		return nil, fmt.Errorf("reading simulated root: %w", cerr)
	case kerr != nil && !errors.Is(kerr, fs.ErrNotExist):
		return nil, fmt.Errorf("reading simulated root key: %w", kerr)
	default:
		return nil, fmt.Errorf("reading simulated root in %s: certificate or key missing", dir)
	}
	r, err := NewRoot()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("storing simulated root: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(r.Key)
	if err != nil {
		return nil, fmt.Errorf("storing simulated root: %w", err)
	}
	// Key first, written exclusively: two processes racing on first start
	// cannot both win; the loser reads the winner's files on its next start.
	if err := writeExclusive(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("storing simulated root key: %w", err)
	}
	if err := writeExclusive(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Cert.Raw}), 0o644); err != nil {
		return nil, fmt.Errorf("storing simulated root: %w", err)
	}
	return r, nil
}

func writeExclusive(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func parseRoot(certPEM, keyPEM []byte) (*Root, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil || cb.Type != "CERTIFICATE" || kb.Type != "PRIVATE KEY" {
		return nil, errors.New("reading simulated root: not PEM CERTIFICATE / PRIVATE KEY")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("reading simulated root: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("reading simulated root key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("reading simulated root: key does not match certificate")
	}
	return &Root{Cert: cert, Key: key}, nil
}
