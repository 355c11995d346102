//go:build !(ego && cgo)

package sgx

import (
	"context"
	"errors"
	"testing"
)

func TestStubUnsupported(t *testing.T) {
	if _, err := Open(context.Background()); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Open: %v, want ErrUnsupported", err)
	}
	if InEnclave() {
		t.Fatal("InEnclave without the EGo binding")
	}
}
