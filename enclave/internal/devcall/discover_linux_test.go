//go:build linux

package devcall

import (
	"errors"
	"strings"
	"testing"
)

var errNoDevice = errors.New("no test interface")

// fakeDevice records the path it was opened with.
type fakeDevice struct {
	path string
	err  error
}

func (d *fakeDevice) Open(path string) error {
	d.path = path
	return d.err
}

func TestDiscoverDevice(t *testing.T) {
	errMissing := errors.New("no such device")
	guest := Discovery{Provider: "test_guest", DefaultDevicePath: "/dev/test_guest", ErrNoDevice: errNoDevice}
	for _, tt := range []struct {
		name     string
		opts     Options
		openErr  error
		wantPath string
		wantErr  bool
	}{
		{"default path", Options{DisableConfigfs: true}, nil, "/dev/test_guest", false},
		{"given path", Options{DisableConfigfs: true, DevicePath: "/tmp/x"}, nil, "/tmp/x", false},
		{"device missing", Options{DisableConfigfs: true}, errMissing, "/dev/test_guest", true},
		// No real configfs-tsm provider is called test_guest, so discovery
		// falls through to the device on any machine.
		{"configfs of another provider", Options{}, nil, "/dev/test_guest", false},
		{"configfs of another provider, device missing", Options{}, errMissing, "/dev/test_guest", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dev := &fakeDevice{err: tt.openErr}
			got, err := Discover(guest, tt.opts, "configfs", dev, func(d *fakeDevice) string { return "device " + d.path })
			if dev.path != tt.wantPath {
				t.Fatalf("opened %q, want %q", dev.path, tt.wantPath)
			}
			if tt.wantErr {
				if !errors.Is(err, errNoDevice) || !strings.Contains(err.Error(), errMissing.Error()) || got != "" {
					t.Fatalf("got %q err %v, want ErrNoDevice naming the device error", got, err)
				}
				if !tt.opts.DisableConfigfs && !strings.Contains(err.Error(), "configfs-tsm:") {
					t.Fatalf("err %v does not say why configfs-tsm was passed over", err)
				}
				return
			}
			if err != nil || got != "device "+tt.wantPath {
				t.Fatalf("got %q err %v", got, err)
			}
		})
	}
}
