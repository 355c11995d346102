// Package devcall is the request mechanism the TDX quoter (enclave/tdx) and
// the SEV-SNP reporter (enclave/snp) share. A Caller wraps one guest
// attestation interface, a configfs-tsm report entry or a guest device, as a
// function from 64 bytes of report data to raw evidence. It serves one
// request at a time, because both interfaces serve one at a time; retries a
// busy interface (EBUSY, EAGAIN) with doubling waits; and honours ctx while
// it waits. A request whose ctx has already ended never reaches the
// interface. The kernel call itself cannot be interrupted, so a request
// whose ctx ends during it returns at once while the call finishes in the
// background, still holding the interface. Close waits for a request in flight and then
// closes the interface; every request after it fails with the caller's
// closed error. On Linux, Discover finds the interface: configfs-tsm when
// its provider is the one asked for, otherwise the guest device. Errors are
// the caller's own sentinels (Config.ErrFailed, Config.ErrClosed,
// Discovery.ErrNoDevice) so that each package keeps its exported names; the
// messages name the evidence through Config.What. Checking what the
// interface returned is left to the caller.
package devcall
