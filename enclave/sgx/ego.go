//go:build ego && cgo

package sgx

import "github.com/edgelesssys/ego/enclave"

// egoPlatform calls the EGo runtime.
type egoPlatform struct{}

func newPlatform() (platform, error) { return egoPlatform{}, nil }

func (egoPlatform) selfReport() error {
	_, err := enclave.GetSelfReport()
	return err
}

func (egoPlatform) productSealKey() ([]byte, error) {
	key, _, err := enclave.GetProductSealKey()
	return key, err
}

func (egoPlatform) remoteReport(reportData []byte) ([]byte, error) {
	return enclave.GetRemoteReport(reportData)
}
