//go:build linux

package tdx

import (
	"github.com/google/go-tdx-guest/client"

	"github.com/teegate/teegate/enclave/internal/devcall"
)

func openPlatform(opts Options) (source, error) {
	// configfs-tsm's "provider" attribute reads tdx_guest in a TD (Linux
	// Documentation/ABI/testing/configfs-tsm).
	td := devcall.Discovery{Provider: "tdx_guest", DefaultDevicePath: DefaultDevicePath, ErrNoDevice: ErrNoDevice}
	configfs := providerSource(&client.LinuxConfigFsQuoteProvider{})
	return devcall.Discover(td, devcall.Options(opts), configfs, client.Device(&client.LinuxDevice{}), deviceSource)
}
