// Package tdx produces Intel TDX quotes inside a trust domain through
// google/go-tdx-guest. Open picks the kernel's configfs-tsm report interface
// (/sys/kernel/config/tsm/report) when it is there and falls back to the
// /dev/tdx_guest ioctls of older kernels; New wraps any go-tdx-guest
// QuoteProvider or Device, which is the seam tests use to replay a captured
// quote. A Quoter serializes requests (the interfaces serve one at a time),
// retries a busy device a few times, honours ctx while it waits, and checks
// that the quote it got back parses as a TDX quote carrying exactly the
// report data it asked for, so a confused driver cannot hand the worker
// evidence bound to something else. It is an enclave.CPUSource of kind
// "tdx". Verification lives in attest/tdx; this package never verifies.
//
// Importing go-tdx-guest's client registers its command-line flags on the
// global FlagSet and sets up its global logger at init; this package parses
// no flags and reads no device path from them.
package tdx
