package pcs

import (
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"sync"
)

// intelRootPEM is the Intel SGX Root CA (valid to 2049-12-31), the trust
// anchor of every PCK, TCB-signing and QE-identity chain. See
// testdata/README.md for its provenance.
//
//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

// parsedRoot parses the embedded root once; the result never changes.
var parsedRoot = sync.OnceValues(func() (*x509.Certificate, error) {
	blk, _ := pem.Decode(intelRootPEM)
	if blk == nil {
		return nil, ErrPCKChain
	}
	return x509.ParseCertificate(blk.Bytes)
})

// IntelSGXRootCA returns the embedded Intel SGX Root CA certificate. Callers
// must not modify it.
func IntelSGXRootCA() *x509.Certificate {
	c, err := parsedRoot()
	if err != nil {
		// The embedded file is fixed at build time; a parse failure is a
		// build defect, caught by the package tests.
		panic("pcs: embedded Intel SGX Root CA does not parse: " + err.Error())
	}
	return c
}

// IntelRoots returns a new pool holding only the Intel SGX Root CA.
func IntelRoots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(IntelSGXRootCA())
	return p
}
