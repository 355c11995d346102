//go:build linux

package devcall

import (
	"fmt"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
)

// Discovery says where to look for a guest's attestation interface.
type Discovery struct {
	// Provider is what configfs-tsm's "provider" attribute reads in this
	// kind of guest (Linux Documentation/ABI/testing/configfs-tsm):
	// "tdx_guest", "sev_guest".
	Provider string
	// DisableConfigfs skips configfs-tsm and goes straight to the device.
	DisableConfigfs bool
	// DevicePath is the guest device to fall back to.
	DevicePath string
	// ErrNoDevice is wrapped when neither interface is available.
	ErrNoDevice error
}

// Discover returns configfs() when configfs-tsm is backed by d.Provider,
// and otherwise what device(d.DevicePath) opens. When neither can be used
// it fails with d.ErrNoDevice and the reason each was passed over.
func Discover[S any](d Discovery, configfs func() S, device func(path string) (S, error)) (S, error) {
	var why []string
	if !d.DisableConfigfs {
		prov, err := configfsProvider()
		switch {
		case err != nil:
			why = append(why, fmt.Sprintf("configfs-tsm: %v", err))
		case prov != d.Provider:
			why = append(why, fmt.Sprintf("configfs-tsm: provider is %q, not %q", prov, d.Provider))
		default:
			return configfs(), nil
		}
	}
	s, err := device(d.DevicePath)
	if err != nil {
		why = append(why, err.Error())
		var zero S
		return zero, fmt.Errorf("%w: %s", d.ErrNoDevice, strings.Join(why, "; "))
	}
	return s, nil
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
