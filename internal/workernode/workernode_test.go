package workernode

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/worker/engine/builtin"
)

func TestConfigValidate(t *testing.T) {
	eng, err := builtin.New(builtin.Config{})
	if err != nil {
		t.Fatal(err)
	}
	att, _, err := sim.OpenAttester(t.TempDir(), sim.Config{QuoteDelay: sim.NoDelay})
	if err != nil {
		t.Fatal(err)
	}
	dial := func(...nats.Option) (*nats.Conn, error) { return nil, errors.New("no") }
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"no engine", Config{Attester: att, Dial: dial}, false},
		{"attester without dial", Config{Engine: eng, Attester: att}, false},
		{"no attester and no conn", Config{Engine: eng}, false},
		{"attested", Config{Engine: eng, Attester: att, Dial: dial}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.ok != (err == nil) || err != nil && !errors.Is(err, ErrConfig) {
				t.Fatalf("Validate: %v", err)
			}
			if err == nil && !strings.HasPrefix(tc.cfg.Worker.ID, "w-") {
				t.Fatalf("default id %q", tc.cfg.Worker.ID)
			}
		})
	}
}
