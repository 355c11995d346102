package client

import (
	"context"
	"testing"
	"time"

	"github.com/teegate/teegate/attest/collateral"
)

// TestOptionsCollateral: a loaded collateral directory plugs into the SDK
// options; the golden transcripts (simulated TEE) still verify with
// revocation required, since simulated chains carry no vendor revocation.
func TestOptionsCollateral(t *testing.T) {
	set, err := collateral.Load("../../cmd/teegate/testdata/collateral")
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Intel) == 0 || len(set.RIMs) == 0 {
		t.Fatalf("collateral set %+v", set)
	}
	tr, err := LoadTranscript("testdata/chat.transcript.json")
	if err != nil {
		t.Fatal(err)
	}
	saved := tr.Saved
	res, err := VerifyTranscript(context.Background(), tr, Options{AllowSimulated: true, Collateral: set, RequireRevocation: true,
		Now: func() time.Time { return saved }})
	if err != nil || !res.Verified {
		t.Fatalf("verify with collateral: %+v, %v", res, err)
	}
}
