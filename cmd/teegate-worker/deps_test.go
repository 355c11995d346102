package main

import (
	"os/exec"
	"strings"
	"testing"
)

// forbidden are packages the measured worker binary must not link in its
// default build: simulated attestation and dev-only code.
var forbidden = []string{
	"github.com/teegate/teegate/enclave/sim",
	"github.com/teegate/teegate/enclave/sim/simtdx",
	"github.com/teegate/teegate/enclave/sim/simgpu",
	"github.com/teegate/teegate/internal/stack",
	"github.com/teegate/teegate/internal/stacktest",
	"github.com/teegate/teegate/internal/natsembed",
	"github.com/nats-io/nats-server/v2/server",
}

func deps(t *testing.T, tags string) map[string]bool {
	t.Helper()
	args := []string{"list", "-deps"}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	out, err := exec.Command("go", append(args, ".")...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	m := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		m[p] = true
	}
	return m
}

func TestWorkerBinaryDoesNotLinkSimulation(t *testing.T) {
	d := deps(t, "")
	for _, p := range forbidden {
		if d[p] {
			t.Errorf("the measured worker binary links %s", p)
		}
	}
	// The production producers are linked.
	for _, p := range []string{"github.com/teegate/teegate/worker", "github.com/teegate/teegate/enclave"} {
		if !d[p] {
			t.Errorf("the worker binary does not link %s", p)
		}
	}
}

func TestSimulationNeedsExplicitTag(t *testing.T) {
	if d := deps(t, "teegate_sim"); !d["github.com/teegate/teegate/enclave/sim"] {
		t.Fatal("with -tags teegate_sim the worker should link the simulated TEE")
	}
}
