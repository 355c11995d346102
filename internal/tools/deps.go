//go:build tools

// Package tools pins modules that packages under construction depend on, so
// concurrent work does not race on go.mod. It is never built.
package tools

import (
	_ "github.com/NVIDIA/go-nvml/pkg/nvml"
	_ "github.com/beevik/etree"
	_ "github.com/edgelesssys/ego/enclave"
	_ "github.com/google/go-sev-guest/verify"
	_ "github.com/google/go-tdx-guest/verify"
	_ "github.com/open-policy-agent/opa/v1/rego"
	_ "github.com/russellhaering/goxmldsig"
	_ "golang.org/x/time/rate"
)
