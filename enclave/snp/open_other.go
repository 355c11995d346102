//go:build !linux

package snp

import "fmt"

func openPlatform(Options) (source, error) {
	return source{}, fmt.Errorf("%w: SEV-SNP guests run Linux", ErrNoDevice)
}
