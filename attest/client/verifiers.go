package client

import (
	"crypto/x509"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/verifiers"
)

// DefaultVerifyOptions returns bundle verification options with every TEE
// kind wired (attest/verifiers: TDX, SGX, SEV-SNP, NVIDIA GPUs), the same
// as the gateway and the verify CLI use. gpuRoots nil means the embedded
// NVIDIA Device Identity CA.
func DefaultVerifyOptions(allowSimulated bool, gpuRoots *x509.CertPool) attest.VerifyOptions {
	return verifiers.Options(verifiers.Config{AllowSimulated: allowSimulated, NVIDIARoots: gpuRoots})
}
