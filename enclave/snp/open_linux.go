//go:build linux

package snp

import (
	"fmt"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-sev-guest/client"
)

// configfsProviderSNP is what configfs-tsm's "provider" attribute reads in
// an SEV-SNP guest.
const configfsProviderSNP = "sev_guest"

func openPlatform(opts Options) (source, error) {
	var why []string
	if !opts.DisableConfigfs {
		prov, err := configfsProvider()
		switch {
		case err != nil:
			why = append(why, fmt.Sprintf("configfs-tsm: %v", err))
		case prov != configfsProviderSNP:
			why = append(why, fmt.Sprintf("configfs-tsm: provider is %q, not %q", prov, configfsProviderSNP))
		default:
			// GetRawQuote leaves the privilege level to the driver (the
			// guest's own VMPL floor) unless go-sev-guest's -default_vmpl
			// flag is set, which only a program parsing the global
			// FlagSet could do.
			p := &client.LinuxConfigFsQuoteProvider{}
			return source{name: InterfaceConfigfs, report: p.GetRawQuote}, nil
		}
	}
	path := opts.DevicePath
	if path == "" {
		path = DefaultDevicePath
	}
	d := &client.LinuxDevice{}
	if err := d.Open(path); err != nil {
		why = append(why, err.Error())
		return source{}, fmt.Errorf("%w: %s", ErrNoDevice, strings.Join(why, "; "))
	}
	return source{name: InterfaceDevice, report: deviceReport(d), close: d.Close}, nil
}

// configfsProvider reads which TSM provider backs configfs-tsm, through a
// scratch report entry that is removed again.
func configfsProvider() (string, error) {
	c, err := linuxtsm.MakeClient()
	if err != nil {
		return "", err
	}
	r, err := report.CreateOpenReport(c)
	if err != nil {
		return "", err
	}
	defer r.Destroy()
	b, err := r.ReadOption("provider")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
