package detect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/nvgpu"
	"github.com/teegate/teegate/enclave/sgx"
	"github.com/teegate/teegate/enclave/snp"
	"github.com/teegate/teegate/enclave/tdx"
)

// ErrNoTEE: "auto" found no hardware TEE.
var ErrNoTEE = errors.New("no hardware TEE detected")

// GPU modes for OpenOptions.GPUs.
const (
	// GPUsAuto attaches the GPUs when the NVIDIA driver is present and CC
	// is on, and goes on without them otherwise (saying why).
	GPUsAuto = "auto"
	// GPUsRequire fails unless the GPUs are in CC mode.
	GPUsRequire = "require"
	// GPUsOff never touches NVML.
	GPUsOff = "off"
)

// OpenOptions configure Open.
type OpenOptions struct {
	Options
	// GPUs is GPUsAuto (default), GPUsRequire or GPUsOff.
	GPUs string
}

// Opened is a ready attester and what it is made of.
type Opened struct {
	Attester enclave.Attester
	// Kind is the CPU TEE in use: "tdx", "sev-snp" or "sgx".
	Kind string
	// GPUs is nil when the attester carries no GPU evidence.
	GPUs *nvgpu.GPUs
	// Reasons explains the choices, for the worker's start-up log.
	Reasons []string
	closers []io.Closer
}

// Close releases the producers.
func (o *Opened) Close() error {
	var errs []error
	for _, c := range o.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// Open builds the attester for kind ("auto", "tdx", "sev-snp" or "sgx"):
// the CPU producer of that kind, combined with the NVIDIA GPUs as
// opts.GPUs says. "auto" runs Detect first and fails with ErrNoTEE, its
// reasons in the error, when nothing is found.
func Open(ctx context.Context, kind string, opts OpenOptions) (*Opened, error) {
	o := &Opened{}
	if kind == "auto" {
		r := Detect(ctx, opts.Options)
		o.Reasons = append(o.Reasons, r.Reasons...)
		if r.Kind == KindNone {
			return nil, fmt.Errorf("%w: %s", ErrNoTEE, strings.Join(r.Reasons, "; "))
		}
		kind = r.Kind
	}
	var cpu enclave.CPUSource
	switch kind {
	case enclave.KindTDX:
		q, err := tdx.Open(ctx, tdx.Options{})
		if err != nil {
			return nil, err
		}
		o.Reasons = append(o.Reasons, "tdx: quotes via "+q.Interface())
		cpu, o.closers = q, append(o.closers, q)
	case enclave.KindSEVSNP:
		r, err := snp.Open(ctx, snp.Options{})
		if err != nil {
			return nil, err
		}
		o.Reasons = append(o.Reasons, "sev-snp: reports via "+r.Interface())
		cpu, o.closers = r, append(o.closers, r)
	case enclave.KindSGX:
		r, err := sgx.Open(ctx)
		if err != nil {
			return nil, err
		}
		o.Reasons = append(o.Reasons, "sgx: remote reports via EGo")
		cpu = r
	default:
		return nil, fmt.Errorf("opening TEE: unknown kind %q (want auto, tdx, sev-snp or sgx)", kind)
	}
	o.Kind = kind

	var gpu enclave.GPUSource
	switch opts.GPUs {
	case GPUsOff:
		o.Reasons = append(o.Reasons, "gpus: off")
	case "", GPUsAuto, GPUsRequire:
		g, err := nvgpu.Open(ctx)
		switch {
		case err == nil:
			st := g.CCState()
			o.Reasons = append(o.Reasons, fmt.Sprintf("gpus: CC %s, environment %s, ready %v", st.Mode(), st.Environment, st.GPUsReady))
			o.GPUs, gpu, o.closers = g, g, append(o.closers, g)
		case opts.GPUs == GPUsRequire:
			o.Close()
			return nil, fmt.Errorf("opening GPUs: %w", err)
		default:
			o.Reasons = append(o.Reasons, fmt.Sprintf("gpus: none attached (%v)", err))
		}
	default:
		o.Close()
		return nil, fmt.Errorf("opening GPUs: unknown mode %q (want auto, require or off)", opts.GPUs)
	}
	o.Attester = enclave.Combine(cpu, gpu)
	return o, nil
}
