package detect

import (
	"testing"

	// The worker links every producer. go-tdx-guest and go-sev-guest both
	// register flags on the global FlagSet at init; a name registered twice
	// would panic before main. Linking them into this test binary proves
	// they coexist.
	_ "github.com/teegate/teegate/enclave/nvgpu"
	_ "github.com/teegate/teegate/enclave/sgx"
	_ "github.com/teegate/teegate/enclave/snp"
	_ "github.com/teegate/teegate/enclave/tdx"
)

func TestProducersLinkTogether(t *testing.T) {}
