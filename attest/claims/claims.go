package claims

import "time"

// Version is the schema version of Claims. Policies may check it.
const Version = 1

// TEE kinds.
const (
	TEETDX       = "tdx"
	TEESGX       = "sgx"
	TEESEVSNP    = "sev-snp"
	TEESimulated = "simulated"
)

// TCB statuses as Intel names them (TDX/SGX). SEV-SNP uses UpToDate and
// OutOfDate when the verifier was given minimums for the product line, and
// Unknown otherwise; simulated evidence uses UpToDate.
const (
	TCBUpToDate                          = "UpToDate"
	TCBSWHardeningNeeded                 = "SWHardeningNeeded"
	TCBConfigurationNeeded               = "ConfigurationNeeded"
	TCBConfigurationAndSWHardeningNeeded = "ConfigurationAndSWHardeningNeeded"
	TCBOutOfDate                         = "OutOfDate"
	TCBOutOfDateConfigurationNeeded      = "OutOfDateConfigurationNeeded"
	TCBRevoked                           = "Revoked"
	// TCBUnknown: the verifier had no reference to judge the TCB by.
	TCBUnknown = "Unknown"
)

// Claims is the normalized, verified view of one piece of evidence (an
// evidence bundle: CPU evidence plus the GPUs bound to it). Every field is
// set only by a verifier after the check that establishes it succeeded;
// Sources names that check per field (for example "tdx.quote_signature",
// "tdx.collateral", "nvidia.rim"). Byte strings are lowercase hex.
type Claims struct {
	Version int `json:"version"`
	// TEE is the CPU TEE kind: tdx, sgx, sev-snp or simulated.
	TEE string `json:"tee"`
	// Simulated is true whenever any part of the evidence chains to a
	// simulated root. Production policies reject it.
	Simulated bool `json:"simulated"`
	// Debug is true when the TD/enclave/guest runs with debugging enabled.
	Debug bool `json:"debug"`
	// Measurements of the CPU TEE, lowercase hex, keyed by their usual
	// names: mrtd, rtmr0..rtmr3, mrseam, mrsignerseam (TDX); mrenclave,
	// mrsigner (SGX); measurement, host_data (SEV-SNP).
	Measurements map[string]string `json:"measurements"`
	// TCB is the platform TCB evaluation; nil when no collateral was used.
	TCB *TCB `json:"tcb,omitempty"`
	// ReportData is the 64-byte report data of the CPU evidence, hex.
	ReportData string `json:"report_data"`
	// GPUs lists each GPU bound to the evidence, in bundle order.
	GPUs []GPU `json:"gpus"`
	// Binding reports the key-binding checks of DESIGN §3.1.
	Binding *Binding `json:"binding,omitempty"`
	// Epoch is the validity of the key epoch the evidence binds, as the
	// bundle states it and its report data commits to.
	Epoch *Epoch `json:"epoch,omitempty"`
	// CreatedAt is when the evidence was produced (bundle creation time).
	CreatedAt time.Time `json:"created_at,omitzero"`
	// AgeSeconds is the evidence age at verification time.
	AgeSeconds int64 `json:"age_seconds"`
	// Sources maps a claim name to the check that established it.
	Sources map[string]string `json:"sources,omitempty"`
}

// TCB is the outcome of matching the platform's TCB against the vendor's
// collateral.
type TCB struct {
	Status string `json:"status"`
	// AdvisoryIDs lists the security advisories (INTEL-SA-xxxxx) that apply
	// to the matched TCB level.
	AdvisoryIDs []string `json:"advisory_ids,omitempty"`
	// TCBDate is the matched TCB level's date (RFC 3339), if known.
	TCBDate string `json:"tcb_date,omitempty"`
	// TEETCBSVN is the raw TEE TCB SVN (TDX) or the reported TCB (SNP), hex.
	TEETCBSVN string `json:"tee_tcb_svn,omitempty"`
	// FMSPC of the platform, hex (Intel).
	FMSPC string `json:"fmspc,omitempty"`
	// CollateralExpired is true when the collateral's nextUpdate is past.
	CollateralExpired bool `json:"collateral_expired,omitempty"`
	// SNP holds the SEV-SNP TCB versions by component (SEV-SNP only), for
	// policies that state minimums per product line.
	SNP *SNPTCB `json:"snp,omitempty"`
}

// SNPTCB is an SEV-SNP report's TCB, decomposed for the product line.
type SNPTCB struct {
	// ProductLine is the AMD product line whose ARK certified the
	// endorsement key: Milan, Genoa, Turin.
	ProductLine string `json:"product_line"`
	// Signer is "vcek" or "vlek".
	Signer string `json:"signer"`
	// Reported is the TCB the endorsement key certifies (REPORTED_TCB).
	Reported SNPTCBParts `json:"reported"`
	// Committed is the TCB the firmware cannot roll back below
	// (COMMITTED_TCB).
	Committed SNPTCBParts `json:"committed"`
	// Current and Launch are the running TCB and the TCB at guest launch.
	Current SNPTCBParts `json:"current"`
	Launch  SNPTCBParts `json:"launch"`
}

// SNPTCBParts are the security patch levels of one TCB_VERSION (FMC is zero
// before Turin).
type SNPTCBParts struct {
	FMC        int `json:"fmc"`
	BootLoader int `json:"boot_loader"`
	TEE        int `json:"tee"`
	SNP        int `json:"snp"`
	Microcode  int `json:"microcode"`
}

// GPU is the verified view of one GPU's attestation report.
type GPU struct {
	Index int `json:"index"`
	// Arch is the GPU architecture, lowercase: hopper, blackwell, simulated.
	Arch string `json:"arch"`
	// CCMode is "on", "off" or "devtools".
	CCMode        string `json:"cc_mode"`
	DriverVersion string `json:"driver_version"`
	VBIOSVersion  string `json:"vbios_version"`
	// SignatureValid: the report's signature verified with the leaf key.
	SignatureValid bool `json:"signature_valid"`
	// ChainValid: the certificate chain verified to a trusted root.
	ChainValid bool `json:"chain_valid"`
	// NonceMatched: the report's nonce is the one the binding requires.
	NonceMatched bool `json:"nonce_matched"`
	// MeasurementsMatched is "match", "mismatch" or "not_checked" (no
	// reference values were given).
	MeasurementsMatched string `json:"measurements_matched"`
	// Measurements are the report's measurement blocks by index, hex.
	Measurements map[string]string `json:"measurements,omitempty"`
	// FWID from the report's opaque data, hex.
	FWID string `json:"fwid,omitempty"`
}

// Epoch is a key epoch's validity (docs/attestation.md §2): its keys sign
// receipts from NotBefore until ErasedAt (NotAfter plus the grace period),
// when they are erased.
type Epoch struct {
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	GraceSeconds int64     `json:"grace_seconds"`
	ErasedAt     time.Time `json:"erased_at"`
}

// Binding reports the checks that tie keys and GPUs to the CPU evidence.
type Binding struct {
	// ReportDataMatched: the CPU report data equals the binding of the
	// bundle's keys, GPU evidence digest and epoch nonce.
	ReportDataMatched bool `json:"report_data_matched"`
	// GPUNoncesMatched: every GPU report carries the derived nonce.
	GPUNoncesMatched bool `json:"gpu_nonces_matched"`
	// SigningKey and HPKEKey are the bound public keys, hex.
	SigningKey string `json:"signing_key"`
	HPKEKey    string `json:"hpke_key,omitempty"`
}
