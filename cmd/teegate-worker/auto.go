package main

import (
	"context"
	"errors"
	"github.com/teegate/teegate/enclave"
	"log/slog"
)

// autoTEE picks the TEE this machine offers. It is replaced by hardware
// detection (enclave/detect) once the producers are wired.
func autoTEE(ctx context.Context, cfg teeConfig, log *slog.Logger) (enclave.Attester, error) {
	return nil, errors.New("no TEE detected on this machine; use -tee none for an unattested worker")
}
