//go:build linux

package snp

import (
	"github.com/google/go-sev-guest/client"

	"github.com/teegate/teegate/enclave/internal/devcall"
)

func openPlatform(opts Options) (source, error) {
	// configfs-tsm's "provider" attribute reads sev_guest in an SEV-SNP
	// guest.
	guest := devcall.Discovery{Provider: "sev_guest", DefaultDevicePath: DefaultDevicePath, ErrNoDevice: ErrNoDevice}
	// GetRawQuote leaves the privilege level to the driver (the guest's
	// own VMPL floor) unless go-sev-guest's -default_vmpl flag is set,
	// which only a program parsing the global FlagSet could do.
	configfs := providerSource(&client.LinuxConfigFsQuoteProvider{})
	return devcall.Discover(guest, devcall.Options(opts), configfs, client.Device(&client.LinuxDevice{}), deviceSource)
}
