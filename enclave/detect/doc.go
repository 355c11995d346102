// Package detect implements `--tee auto`: it looks at the machine the
// worker starts on and chooses which producer to use. It checks, under an
// injectable filesystem root, the configfs-tsm report interface, the TDX
// guest device (/dev/tdx_guest) and the CPU flag tdx_guest, the SEV guest
// device (/dev/sev-guest) and the CPU flag sev_snp, the SGX devices
// (/dev/sgx_enclave) together with whether the process runs inside an EGo
// enclave, and the NVIDIA driver (/proc/driver/nvidia/version,
// /dev/nvidia0, libnvidia-ml.so.1). Detect only reads: it never opens a
// device for writing, creates configfs entries or loads NVML. Its result
// names the chosen kind ("tdx", "sev-snp", "sgx" or "none") and lists one
// human-readable reason per check, for the worker to log at start. Open
// turns a kind ("auto" or an explicit one) into a ready enclave.Attester:
// the CPU producer of that kind combined with the NVIDIA GPUs when they are
// in CC mode.
package detect
