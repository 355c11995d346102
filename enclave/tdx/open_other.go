//go:build !linux

package tdx

import "fmt"

func openPlatform(Options) (source, error) {
	return source{}, fmt.Errorf("%w: TDX guests run Linux", ErrNoDevice)
}
