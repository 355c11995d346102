//go:build linux

package tdx

import (
	"fmt"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-tdx-guest/client"
)

// configfsProviderTDX is what configfs-tsm's "provider" attribute reads in
// a TD (Linux Documentation/ABI/testing/configfs-tsm).
const configfsProviderTDX = "tdx_guest"

func openPlatform(opts Options) (source, error) {
	var why []string
	if !opts.DisableConfigfs {
		prov, err := configfsProvider()
		switch {
		case err != nil:
			why = append(why, fmt.Sprintf("configfs-tsm: %v", err))
		case prov != configfsProviderTDX:
			why = append(why, fmt.Sprintf("configfs-tsm: provider is %q, not %q", prov, configfsProviderTDX))
		default:
			p := &client.LinuxConfigFsQuoteProvider{}
			return source{name: InterfaceConfigfs, quote: p.GetRawQuote}, nil
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
	return source{
		name:  InterfaceDevice,
		quote: func(rd [64]byte) ([]byte, error) { return client.GetRawQuote(d, rd) },
		close: d.Close,
	}, nil
}

// configfsProvider reads which TSM provider backs configfs-tsm. The
// attribute only exists inside a report entry, so a scratch entry is
// created and removed again.
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
