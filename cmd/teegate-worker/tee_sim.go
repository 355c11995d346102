//go:build teegate_sim

package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/sim"
)

// The simulated TEE exists only in builds tagged teegate_sim: development
// and tests. Its evidence says "simulated" and production policies refuse it.
func init() {
	teeFactories["simulated"] = func(_ context.Context, cfg teeConfig) (enclave.Attester, error) {
		root, err := sim.LoadOrCreateRoot(filepath.Join(cfg.DataDir, "sim"))
		if err != nil {
			return nil, fmt.Errorf("loading simulated root: %w", err)
		}
		return sim.NewAttester(sim.Config{Root: root, GPUs: cfg.GPUs})
	}
}
