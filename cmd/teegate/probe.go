package main

import (
	"context"
	"fmt"
	"io"

	"github.com/teegate/teegate/enclave/detect"
	"github.com/teegate/teegate/enclave/nvgpu"
)

// runProbe reports what confidential hardware this machine offers:
// `teegate probe gpu` (NVML: CC state, devtools, GPU count) and
// `teegate probe tee` (the TEE the worker's -tee auto would pick, and why).
func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 || (args[0] != "gpu" && args[0] != "tee") {
		fmt.Fprintln(stderr, "usage: teegate probe gpu|tee")
		return errUsage
	}
	if args[0] == "gpu" {
		return nvgpu.WriteProbe(ctx, stdout)
	}
	r := detect.Detect(ctx, detect.Options{})
	fmt.Fprintf(stdout, "tee: %s\n", r.Kind)
	for _, reason := range r.Reasons {
		fmt.Fprintf(stdout, "  %s\n", reason)
	}
	return nil
}
