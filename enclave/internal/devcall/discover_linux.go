//go:build linux

package devcall

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
)

// Discovery is what one kind of guest looks for.
type Discovery struct {
	// Provider is what configfs-tsm's "provider" attribute reads in this
	// kind of guest (Linux Documentation/ABI/testing/configfs-tsm):
	// "tdx_guest", "sev_guest".
	Provider string
	// DefaultDevicePath is the guest device used when Options.DevicePath
	// is empty.
	DefaultDevicePath string
	// ErrNoDevice is wrapped when neither interface is available.
	ErrNoDevice error
}

// Opener is a guest device not yet opened: go-tdx-guest's and
// go-sev-guest's LinuxDevice.
type Opener interface {
	Open(path string) error
}

// Discover returns configfs when configfs-tsm is backed by d.Provider and
// opts allows it; otherwise it opens dev and returns wrap(dev). When
// neither can be used it fails with d.ErrNoDevice, naming the reason each
// was passed over.
func Discover[S any, D Opener](d Discovery, opts Options, configfs S, dev D, wrap func(D) S) (S, error) {
	var why []string
	if !opts.DisableConfigfs {
		prov, err := configfsProvider()
		switch {
		case err != nil:
			why = append(why, fmt.Sprintf("configfs-tsm: %v", err))
		case prov != d.Provider:
			why = append(why, fmt.Sprintf("configfs-tsm: provider is %q, not %q", prov, d.Provider))
		default:
			return configfs, nil
		}
	}
	if err := dev.Open(cmp.Or(opts.DevicePath, d.DefaultDevicePath)); err != nil {
		why = append(why, err.Error())
		var zero S
		return zero, fmt.Errorf("%w: %s", d.ErrNoDevice, strings.Join(why, "; "))
	}
	return wrap(dev), nil
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
