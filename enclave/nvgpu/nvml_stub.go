//go:build !cgo || !linux

package nvgpu

func newNVML() (nvmlAPI, error) { return nil, ErrUnsupported }
