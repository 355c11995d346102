package wire

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

func TestConnectSigningInput(t *testing.T) {
	got := ConnectSigningInput([]byte("nonce"))
	want := append(append([]byte(ConnectDomain), 0), "nonce"...)
	if !bytes.Equal(got, want) {
		t.Fatalf("%q", got)
	}
	// The domain prefix keeps a server-chosen nonce from being signed as it is.
	if bytes.Equal(ConnectSigningInput(nil), nil) || !bytes.HasPrefix(ConnectSigningInput(nil), []byte("teegate/")) {
		t.Fatal("no domain separation")
	}
}

func TestWorkerNKey(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	tests := []struct {
		name    string
		key     []byte
		wantErr error
	}{
		{"ed25519 key", pub, nil},
		{"short key", pub[:31], ErrWorkerKey},
		{"empty", nil, ErrWorkerKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nk, err := WorkerNKey(tt.key)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v", err)
			}
			if err != nil {
				return
			}
			raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(nk))
			if err != nil || !bytes.Equal(raw, tt.key) || !nkeys.IsValidPublicUserKey(nk) {
				t.Fatalf("nkey %q does not round-trip: %v", nk, err)
			}
			if p := WorkerInboxPrefix(nk); !strings.HasPrefix(p, WorkerInboxRoot+".U") {
				t.Fatalf("inbox prefix %q", p)
			}
		})
	}
	if _, err := WorkerConnectOptions("", pub, nil); err == nil {
		t.Fatal("options without evidence id or signer")
	}
	if _, err := WorkerConnectOptions("id", pub[:3], func([]byte) ([]byte, error) { return nil, nil }); !errors.Is(err, ErrWorkerKey) {
		t.Fatalf("bad key: %v", err)
	}
}
