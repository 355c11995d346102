# teegate production admission policy.
#
# Input: the normalized claims of attest/claims (JSON) plus "now" (RFC 3339,
# UTC, whole seconds). Data: production.data.json beside this file (schema in
# README.md). Every rule is written to fail closed: a missing input field or
# a missing reference value produces a deny reason, never a silent pass.
package teegate.policy

default allow := false

allow if count(deny) == 0

supported_tees := {"tdx", "sgx", "sev-snp"}

# Measurements that must be pinned in data.reference for each TEE kind.
# SGX is checked separately: either mrenclave or mrsigner.
required_pins := {
	"tdx": {"mrtd", "mrseam"},
	"sgx": set(),
	"sev-snp": {"measurement"},
}

gpus := input.gpus if is_array(input.gpus)

else := []

measurements := input.measurements if is_object(input.measurements)

else := {}

tcb := input.tcb if is_object(input.tcb)

else := {}

now_ns := time.parse_rfc3339_ns(input.now) if is_string(input.now)

# OPA treats a negated builtin call over an undefined reference as undefined,
# not true: "not is_object(input.x)" never fires when input.x is absent. Every
# presence test is therefore a helper rule, negated as a whole.
tee_named if is_string(input.tee)

# --- schema and evaluation context ---------------------------------------

deny contains "claims schema version is not 1" if not input.version == 1

deny contains "evaluation time (input.now) is missing" if not now_ns

# --- evidence kind --------------------------------------------------------

deny contains "simulated evidence is not accepted" if not input.simulated == false

deny contains "simulated TEE is not accepted" if input.tee == "simulated"

deny contains "claims name no TEE kind" if not tee_named

deny contains sprintf("unsupported TEE kind %q", [input.tee]) if {
	is_string(input.tee)
	input.tee != "simulated"
	not input.tee in supported_tees
}

deny contains "debug mode is enabled (TD/enclave/guest is debuggable)" if not input.debug == false

# --- platform TCB ---------------------------------------------------------

deny contains "TCB status is missing (no collateral was evaluated)" if not tcb_status_named

tcb_status_named if is_string(tcb.status)

deny contains sprintf("TCB status %s is not UpToDate and not tolerated (advisories: %s)", [effective_tcb_status, concat(",", advisories)]) if {
	is_string(tcb.status)
	effective_tcb_status != "UpToDate"
	not tcb_tolerated
}

# The status judged: the verifier's, except for SEV-SNP, whose status the
# policy derives itself from the reported and committed TCB against the
# minimums data.sev_snp.min_tcb states per product line (AMD security
# bulletins). A verifier's OutOfDate is never upgraded; without a stated
# minimum the status is Unknown.
effective_tcb_status := "OutOfDate" if {
	input.tee == "sev-snp"
	count(snp_below) > 0
} else := "OutOfDate" if {
	input.tee == "sev-snp"
	tcb.status == "OutOfDate"
} else := "UpToDate" if {
	input.tee == "sev-snp"
	snp_minimum_stated
} else := "Unknown" if {
	input.tee == "sev-snp"
} else := tcb.status

# --- SEV-SNP TCB minimums -------------------------------------------------

snp_tcb := tcb.snp if is_object(tcb.snp)

snp_minimum := data.sev_snp.min_tcb[snp_tcb.product_line] if is_object(data.sev_snp.min_tcb[snp_tcb.product_line])

snp_minimum_stated if is_object(snp_minimum)

snp_tcb_present if is_object(snp_tcb)

snp_below contains sprintf("%s %s SPL %v < %v", [which, component, have, want]) if {
	some component, want in snp_minimum
	some which in ["reported", "committed"]
	have := object.get(snp_tcb, [which, component], -1)
	have < want
}

deny contains "SEV-SNP TCB versions are missing from the claims" if {
	input.tee == "sev-snp"
	not snp_tcb_present
}

deny contains sprintf("SEV-SNP minimum TCB is not stated for product line %q (data.sev_snp.min_tcb)", [snp_tcb.product_line]) if {
	input.tee == "sev-snp"
	snp_tcb_present
	not snp_minimum_stated
}

deny contains sprintf("SEV-SNP TCB is below the minimum stated for %s: %s", [snp_tcb.product_line, concat(", ", sort(snp_below))]) if {
	input.tee == "sev-snp"
	count(snp_below) > 0
	not tcb_tolerated
}

advisories := [id | some id in tcb.advisory_ids] if is_array(tcb.advisory_ids)

else := []

# A non-UpToDate status is tolerated when an entry of data.tcb.tolerated names
# it, covers every advisory that applies, and has not expired.
tcb_tolerated if {
	some t in data.tcb.tolerated
	t.status == effective_tcb_status
	every id in advisories {
		id in t.advisory_ids
	}
	now_ns < time.parse_rfc3339_ns(t.until)
}

deny contains "TCB collateral is expired" if {
	tcb.collateral_expired == true
	not data.tcb.allow_expired_collateral == true
}

deny contains sprintf("TEE TCB SVN %q is below the minimum %q", [svn, minimum]) if {
	minimum := data.min_tee_tcb_svn[input.tee]
	minimum != ""
	svn := object.get(tcb, "tee_tcb_svn", "")
	not svn_at_least(svn, minimum)
}

# Component-wise comparison of two equal-length hex strings, one byte (two
# hex digits) at a time. Lowercase hex digits sort like their values.
svn_at_least(svn, minimum) if {
	count(svn) == count(minimum)
	count(minimum) % 2 == 0
	have := regex.find_n(`..`, lower(svn), -1)
	every i, want in regex.find_n(`..`, lower(minimum), -1) {
		have[i] >= want
	}
}

# --- CPU measurements -----------------------------------------------------

deny contains sprintf("no reference measurements configured for TEE %q", [input.tee]) if {
	input.tee in supported_tees
	not reference_configured
}

deny contains sprintf("reference values for TEE %q must pin %s", [input.tee, name]) if {
	some name in required_pins[input.tee]
	not pinned(name)
}

deny contains "reference values for TEE \"sgx\" must pin mrenclave or mrsigner" if {
	input.tee == "sgx"
	not pinned("mrenclave")
	not pinned("mrsigner")
}

deny contains sprintf("measurement %s %q is not an allowed reference value", [name, value]) if {
	input.tee in supported_tees
	some name, allowed in data.reference[input.tee]
	value := lower(object.get(measurements, name, ""))
	not allowed_value(value, allowed)
}

reference_configured if is_object(data.reference[input.tee])

pinned(name) if is_array(data.reference[input.tee][name])

allowed_value(value, allowed) if value in {lower(v) | some v in allowed}

# --- GPUs -----------------------------------------------------------------

deny contains sprintf("fewer GPUs than required: %d < %d", [count(gpus), data.min_gpus]) if {
	count(gpus) < data.min_gpus
}

deny contains sprintf("GPU %v: simulated GPU evidence is not accepted", [g.index]) if {
	some g in gpus
	g.arch == "simulated"
}

deny contains sprintf("GPU %v: confidential computing mode is devtools (developer tools mode), not on", [g.index]) if {
	some g in gpus
	g.cc_mode == "devtools"
}

deny contains sprintf("GPU %v: confidential computing mode is %q, not on", [g.index, mode]) if {
	some g in gpus
	mode := object.get(g, "cc_mode", "")
	not mode in {"on", "devtools"}
}

deny contains sprintf("GPU %v: report signature is not valid", [g.index]) if {
	some g in gpus
	not g.signature_valid == true
}

deny contains sprintf("GPU %v: certificate chain is not valid", [g.index]) if {
	some g in gpus
	not g.chain_valid == true
}

deny contains sprintf("GPU %v: report nonce does not match the binding", [g.index]) if {
	some g in gpus
	not g.nonce_matched == true
}

deny contains sprintf("GPU %v: measurements are %q, not match", [g.index, result]) if {
	some g in gpus
	result := object.get(g, "measurements_matched", "")
	result != "match"
}

deny contains sprintf("GPU %v: driver version %q is not allowed", [g.index, version]) if {
	some g in gpus
	version := object.get(g, "driver_version", "")
	not driver_allowed(version)
}

driver_allowed(version) if version in data.gpu.allowed_driver_versions

deny contains sprintf("GPU %v: VBIOS version %q is not allowed", [g.index, version]) if {
	some g in gpus
	version := object.get(g, "vbios_version", "")
	not allowed_value(lower(version), data.gpu.allowed_vbios_versions)
}

# --- key binding ----------------------------------------------------------

deny contains "key binding is missing" if not binding_present

binding_present if is_object(input.binding)

deny contains "report data does not bind the keys and GPU evidence" if {
	is_object(input.binding)
	not input.binding.report_data_matched == true
}

deny contains "GPU nonces do not match the binding" if {
	count(gpus) > 0
	is_object(input.binding)
	not input.binding.gpu_nonces_matched == true
}

# --- freshness ------------------------------------------------------------

# The age is the larger of the verifier's age_seconds and now - created_at,
# so a cached claims set keeps ageing with input.now.
ages contains input.age_seconds if is_number(input.age_seconds)

ages contains floor((now_ns - time.parse_rfc3339_ns(input.created_at)) / 1000000000) if {
	is_string(input.created_at)
}

evidence_age := max(ages)

deny contains "max_age_seconds is not configured" if not max_age_configured

max_age_configured if is_number(data.max_age_seconds)

deny contains "evidence age is unknown" if count(ages) == 0

deny contains sprintf("evidence is %d s old, older than the maximum of %d s", [evidence_age, data.max_age_seconds]) if {
	evidence_age > data.max_age_seconds
}

deny contains "evidence creation time is in the future" if {
	is_string(input.created_at)
	time.parse_rfc3339_ns(input.created_at) > now_ns + skew_ns
}

# Referencing data.x (never all of data) keeps the policy from depending on
# its own package, which OPA would reject as recursion.
skew_ns := data.max_clock_skew_seconds * 1000000000 if is_number(data.max_clock_skew_seconds)

else := 0
