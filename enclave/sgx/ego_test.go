//go:build ego && cgo

package sgx

import (
	"context"
	"errors"
	"testing"
)

// TestRealBindingOutsideEnclave runs EGo's real calls in this ordinary
// process (go test -tags ego): they must be refused, never produce a zero
// seal key or a report.
func TestRealBindingOutsideEnclave(t *testing.T) {
	if InEnclave() {
		t.Skip("running inside an SGX enclave")
	}
	_, err := Open(context.Background())
	if !errors.Is(err, ErrNotInEnclave) {
		t.Fatalf("Open: %v, want ErrNotInEnclave", err)
	}
	t.Log(err)
	p, _ := newPlatform()
	if _, err := p.remoteReport(make([]byte, 64)); err == nil {
		t.Fatal("remote report outside an enclave")
	}
}
