//go:build !(ego && cgo)

package sgx

func newPlatform() (platform, error) { return nil, ErrUnsupported }
