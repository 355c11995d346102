// Package snp produces AMD SEV-SNP attestation reports inside a
// confidential VM through google/go-sev-guest. Open picks the kernel's
// configfs-tsm report interface when its provider is sev_guest and falls
// back to the /dev/sev-guest ioctls; FromQuoteProvider and FromDevice wrap
// any go-sev-guest QuoteProvider or Device, which is the seam tests use.
// Whenever the host provides them, the report comes with the certificate
// table of an extended guest request (VCEK or VLEK, ASK, ARK), appended
// after the 0x4A0-byte report exactly as attest/snp.Verify reads it, so a
// verifier needs no network. A Reporter serializes requests, retries a busy
// device, honours ctx while it waits, and checks that the report carries
// exactly the report data it asked for. It is an enclave.CPUSource of kind
// "sev-snp". Verification lives in attest/snp; this package never verifies.
//
// Importing go-sev-guest's client registers its command-line flags on the
// global FlagSet (the defaults apply: VMPL from the driver, and a 2 s
// self-throttle between ioctls); this package parses no flags.
package snp
