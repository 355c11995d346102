package cliutil

import (
	"bytes"
	"testing"

	"github.com/nats-io/nkeys"
)

// Seed files are operator input: parsing never panics, and only a user
// nkey seed is accepted (an account or operator seed would be a key that
// signs for others, not a connection's identity).
func FuzzSeedFile(f *testing.F) {
	user, _ := nkeys.CreateUser()
	useed, _ := user.Seed()
	acct, _ := nkeys.CreateAccount()
	aseed, _ := acct.Seed()
	f.Add(useed)
	f.Add(aseed)
	f.Add([]byte("-----BEGIN USER NKEY SEED-----\n" + string(useed) + "\n------END USER NKEY SEED------\n"))
	f.Add([]byte("SU"))
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte("A"), 200))
	f.Fuzz(func(t *testing.T, raw []byte) {
		opts, err := seedOption(raw, "seed")
		if err != nil {
			return
		}
		if len(opts) != 1 {
			t.Fatalf("accepted seed gave %d options", len(opts))
		}
		kp, err := nkeys.ParseDecoratedNKey(raw)
		if err != nil {
			t.Fatalf("accepted a seed nkeys cannot parse: %v", err)
		}
		if pub, _ := kp.PublicKey(); !nkeys.IsValidPublicUserKey(pub) {
			t.Fatalf("accepted a non-user seed (%s)", pub)
		}
	})
}
