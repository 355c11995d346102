package snp

import (
	_ "embed"
	"sync"
)

// The AMD ARK/ASK (VCEK) and ARK/ASVK (VLEK) chains AMD KDS serves from
// /vcek/v1/{product}/cert_chain and /vlek/v1/{product}/cert_chain, as
// go-sev-guest v0.15.0 ships them (roots/README.md).
var (
	//go:embed roots/ask_ark_milan.pem
	milanVCEK []byte
	//go:embed roots/ask_ark_milan_vlek.pem
	milanVLEK []byte
	//go:embed roots/ask_ark_genoa.pem
	genoaVCEK []byte
	//go:embed roots/ask_ark_genoa_vlek.pem
	genoaVLEK []byte
	//go:embed roots/ask_ark_turin_vcek.pem
	turinVCEK []byte
	//go:embed roots/ask_ark_turin_vlek.pem
	turinVLEK []byte
)

// embeddedRoots parses the embedded chains once, on first use (never at
// init), one Chain per product line holding both its ASK and its ASVK.
var embeddedRoots = sync.OnceValue(func() []*Chain {
	var out []*Chain
	for _, pair := range [][2][]byte{{milanVCEK, milanVLEK}, {genoaVCEK, genoaVLEK}, {turinVCEK, turinVLEK}} {
		c, err := ParseChain(append(append([]byte{}, pair[0]...), pair[1]...))
		if err != nil {
			panic("attest/snp: embedded AMD roots: " + err.Error())
		}
		out = append(out, c)
	}
	return out
})

// Roots returns the embedded AMD chains (Milan, Genoa, Turin; ASK and
// ASVK each). The result is shared: do not modify it.
func Roots() []*Chain { return embeddedRoots() }
