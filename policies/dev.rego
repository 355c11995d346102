# teegate development policy: admits simulated evidence and debug TEEs so the
# embedded default (make run) and tests work without hardware. It still
# requires the key binding to hold and the evidence to be fresh: a receipt
# verified under this policy proves which key signed it, not what ran.
#
# Input and data conventions are those of production.rego (README.md).
package teegate.policy

default allow := false

allow if count(deny) == 0

gpus := input.gpus if is_array(input.gpus)

else := []

now_ns := time.parse_rfc3339_ns(input.now) if is_string(input.now)

# OPA treats a negated builtin call over an undefined reference as undefined,
# not true: "not is_object(input.x)" never fires when input.x is absent. Every
# presence test is therefore a helper rule, negated as a whole.
tee_named if is_string(input.tee)

deny contains "claims schema version is not 1" if not input.version == 1

deny contains "evaluation time (input.now) is missing" if not now_ns

deny contains "claims name no TEE kind" if not tee_named

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

deny contains sprintf("GPU %v: report nonce does not match the binding", [g.index]) if {
	some g in gpus
	not g.nonce_matched == true
}

# --- freshness ------------------------------------------------------------

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
