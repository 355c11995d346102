//go:build linux

package tdx

import (
	"github.com/google/go-tdx-guest/client"

	"github.com/teegate/teegate/enclave/internal/devcall"
)

// configfsProviderTDX is what configfs-tsm's "provider" attribute reads in
// a TD (Linux Documentation/ABI/testing/configfs-tsm).
const configfsProviderTDX = "tdx_guest"

func openPlatform(opts Options) (source, error) {
	path := opts.DevicePath
	if path == "" {
		path = DefaultDevicePath
	}
	return devcall.Discover(devcall.Discovery{
		Provider:        configfsProviderTDX,
		DisableConfigfs: opts.DisableConfigfs,
		DevicePath:      path,
		ErrNoDevice:     ErrNoDevice,
	}, func() source {
		p := &client.LinuxConfigFsQuoteProvider{}
		return source{name: InterfaceConfigfs, quote: p.GetRawQuote}
	}, func(path string) (source, error) {
		d := &client.LinuxDevice{}
		if err := d.Open(path); err != nil {
			return source{}, err
		}
		return deviceSource(d), nil
	})
}
