package detect

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/teegate/teegate/enclave/sgx"
	"github.com/teegate/teegate/enclave/snp"
	"github.com/teegate/teegate/enclave/tdx"
)

// TestOpenRefusesWithoutHardware: "auto" on an empty tree fails with the
// reasons; naming a kind on a machine without it fails with that
// producer's error, never with a half-built attester.
func TestOpenRefusesWithoutHardware(t *testing.T) {
	empty := Options{Root: t.TempDir(), InEnclave: func() bool { return false }}
	if _, err := Open(context.Background(), "auto", OpenOptions{Options: empty}); !errors.Is(err, ErrNoTEE) || !strings.Contains(err.Error(), "no hardware TEE found") {
		t.Fatalf("auto on an empty machine: %v, want ErrNoTEE with reasons", err)
	}
	if _, err := Open(context.Background(), "quantum", OpenOptions{}); err == nil {
		t.Fatal("unknown kind accepted")
	}
	if Detect(context.Background(), Options{}).Kind != KindNone {
		t.Skip("this machine has a TEE")
	}
	for kind, want := range map[string]error{"tdx": tdx.ErrNoDevice, "sev-snp": snp.ErrNoDevice} {
		if _, err := Open(context.Background(), kind, OpenOptions{GPUs: GPUsOff}); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", kind, err, want)
		}
	}
	if _, err := Open(context.Background(), "sgx", OpenOptions{GPUs: GPUsOff}); !errors.Is(err, sgx.ErrUnsupported) && !errors.Is(err, sgx.ErrNotInEnclave) {
		t.Errorf("sgx: %v", err)
	}
}
