// Package sgx produces Intel SGX evidence for a worker running inside an
// EGo enclave (edgelesssys/ego). The EGo binding needs cgo and the EGo
// toolchain, so it is compiled only with the build tag "ego" (set by
// `ego-go build -tags ego`); every other build, including CGO_ENABLED=0
// builds of the verifier side, gets a stub whose Open fails with
// ErrUnsupported. Outside an enclave EGo does not fail loudly: remote
// reports return OE_UNSUPPORTED and seal keys come back as 16 zero bytes
// with no error. Open therefore proves it runs in a real enclave (a local
// self report and a non-zero seal key) and refuses with ErrNotInEnclave
// otherwise. A Reporter asks EGo for a remote report over the report data,
// checks that the Open Enclave report wraps an SGX ECDSA quote carrying
// exactly that report data, and hands on the quote itself (what
// attest/sgx.Verify checks) as CPU evidence of kind "sgx". Verification
// lives in attest/sgx; this package never verifies.
package sgx
