package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/detect"
)

func init() {
	for _, kind := range []string{"tdx", "sev-snp", "sgx"} {
		teeFactories[kind] = func(ctx context.Context, cfg teeConfig) (enclave.Attester, error) {
			return openHardware(ctx, kind, cfg)
		}
	}
}

// openHardware opens the real producers of kind ("auto" detects) and logs
// why it chose what it chose.
func openHardware(ctx context.Context, kind string, cfg teeConfig) (enclave.Attester, error) {
	o, err := detect.Open(ctx, kind, detect.OpenOptions{GPUs: cfg.GPUMode})
	if err != nil {
		return nil, fmt.Errorf("opening TEE %s: %w", kind, err)
	}
	if cfg.Log != nil {
		cfg.Log.Info("TEE selected", "kind", o.Kind, "gpus", o.GPUs != nil, "reasons", o.Reasons)
	}
	return o.Attester, nil
}

// autoTEE picks the TEE this machine offers.
func autoTEE(ctx context.Context, cfg teeConfig, log *slog.Logger) (enclave.Attester, error) {
	cfg.Log = log
	return openHardware(ctx, "auto", cfg)
}
