package attest

import "errors"

// Decoding errors.
var (
	// ErrMalformed: the input is not a well-formed object of the expected
	// schema (bad JSON, wrong types, unknown members, bad lengths).
	ErrMalformed = errors.New("malformed")
	// ErrNonCanonical: the input decodes but is not the canonical encoding
	// of what it decodes to, so its id would be ambiguous.
	ErrNonCanonical = errors.New("not canonically encoded")
	// ErrUnsupportedVersion: the object's version is not one this package
	// understands.
	ErrUnsupportedVersion = errors.New("unsupported version")
)

// Evidence bundle verification errors.
var (
	// ErrUnknownTEE: no CPU verifier is registered for the bundle's TEE kind.
	ErrUnknownTEE = errors.New("no verifier for TEE kind")
	// ErrNoGPUVerifier: the bundle carries GPU evidence but no GPU verifier
	// was configured.
	ErrNoGPUVerifier = errors.New("no GPU verifier configured")
	// ErrSimulatedNotAllowed: the bundle chains to a simulated root and the
	// options do not allow simulated evidence.
	ErrSimulatedNotAllowed = errors.New("simulated evidence not allowed")
	// ErrSimulatedRootUntrusted: simulated evidence is allowed, but the
	// bundle's simulated root is not one of the pinned ones.
	ErrSimulatedRootUntrusted = errors.New("simulated root not pinned")
	// ErrCPUEvidence: the CPU verifier rejected the CPU evidence.
	ErrCPUEvidence = errors.New("CPU evidence rejected")
	// ErrGPUEvidence: the GPU verifier rejected a GPU's evidence.
	ErrGPUEvidence = errors.New("GPU evidence rejected")
	// ErrBindingReportData: the CPU evidence's report data is not
	// ReportData(signing_pub, hpke_pub, GPUEvidenceDigest(gpus), epoch_nonce).
	ErrBindingReportData = errors.New("report data does not bind the bundle")
	// ErrBindingGPUNonce: a GPU report does not carry
	// GPUNonce(signing_pub, epoch_nonce).
	ErrBindingGPUNonce = errors.New("GPU nonce does not bind the bundle")
	// ErrBundleSignature: the bundle's signature by its own signing key
	// does not verify, so its unattested members (created, worker) may have
	// been altered after the TEE produced it.
	ErrBundleSignature = errors.New("bundle signature invalid")
	// ErrEvidenceExpired: the bundle is older than VerifyOptions.MaxAge or
	// created in the future beyond the allowed clock skew.
	ErrEvidenceExpired = errors.New("evidence outside its validity window")
)

// Receipt verification errors.
var (
	// ErrReceiptSignature: the Ed25519 signature does not verify over the
	// receipt's signing input with the bundle's signing key.
	ErrReceiptSignature = errors.New("receipt signature invalid")
	// ErrRequestHash: request_sha256 is not the SHA-256 of the request bytes.
	ErrRequestHash = errors.New("request hash mismatch")
	// ErrResponseHash: response_sha256 is not the digest of the response.
	ErrResponseHash = errors.New("response hash mismatch")
	// ErrEvidenceMismatch: the receipt names another evidence bundle than
	// the one offered, or the offered bundle is unknown.
	ErrEvidenceMismatch = errors.New("receipt evidence id mismatch")
	// ErrNonceMismatch: the receipt's client nonce is not the one the client
	// sent.
	ErrNonceMismatch = errors.New("receipt nonce mismatch")
	// ErrReceiptTime: the receipt's created lies in the future or before
	// the bundle whose key signed it.
	ErrReceiptTime = errors.New("receipt time outside its bounds")
	// ErrReceiptEpoch: the receipt's created lies outside the validity its
	// bundle states for the epoch's key: before the key existed
	// (not_before) or after it was erased (not_after plus the grace
	// period). Errors carrying it also match ErrReceiptTime.
	ErrReceiptEpoch = errors.New("receipt created outside its key epoch")
	// ErrBatchProof: the fresh-mode batch proof is missing, malformed, does
	// not include the receipt, or its bundle does not commit to the root.
	ErrBatchProof = errors.New("batch proof invalid")
)
