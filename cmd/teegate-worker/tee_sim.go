//go:build teegate_sim

package main

import (
	"context"

	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/sim"
)

// The simulated TEE exists only in builds tagged teegate_sim: development
// and tests. Its evidence says "simulated" and production policies refuse it.
func init() {
	teeFactories["simulated"] = func(_ context.Context, cfg teeConfig) (enclave.Attester, error) {
		att, _, err := sim.OpenAttester(cfg.DataDir, sim.Config{GPUs: cfg.GPUs})
		return att, err
	}
}
