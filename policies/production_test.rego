# Unit tests of production.rego (run by `go test ./policies/...` or `opa test`).
package teegate.policy_test

import data.teegate.policy

mrtd := "aa00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000aa"

mrseam := "bb00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000bb"

good := {
	"version": 1,
	"tee": "tdx",
	"simulated": false,
	"debug": false,
	"measurements": {"mrtd": mrtd, "mrseam": mrseam, "rtmr3": "00"},
	"tcb": {"status": "UpToDate", "tee_tcb_svn": "0306"},
	"report_data": "ab",
	"gpus": [{
		"index": 0, "arch": "hopper", "cc_mode": "on",
		"driver_version": "550.90.07", "vbios_version": "96.00.9F.00.01",
		"signature_valid": true, "chain_valid": true, "nonce_matched": true,
		"measurements_matched": "match",
	}],
	"binding": {"report_data_matched": true, "gpu_nonces_matched": true, "signing_key": "01"},
	"created_at": "2026-11-27T11:50:00Z",
	"age_seconds": 600,
	"now": "2026-11-27T12:00:00Z",
}

reference := {
	"tdx": {"mrtd": [upper(mrtd)], "mrseam": [mrseam]},
	"sgx": {"mrsigner": ["dd"]},
	"sev-snp": {"measurement": ["ee"]},
}

gpu := {"allowed_driver_versions": ["550.90.07"], "allowed_vbios_versions": ["96.00.9f.00.01"]}

tcb := {"tolerated": [{"status": "SWHardeningNeeded", "advisory_ids": ["INTEL-SA-00615"], "until": "2027-01-01T00:00:00Z"}]}

reasons(inp) := r if {
	r := policy.deny with input as inp
		with data.reference as reference
		with data.gpu as gpu
		with data.tcb as tcb
		with data.max_age_seconds as 3600
		with data.max_clock_skew_seconds as 60
		with data.min_tee_tcb_svn as {"tdx": "0305"}
		with data.min_gpus as 1
}

allowed(inp) if {
	policy.allow with input as inp
		with data.reference as reference
		with data.gpu as gpu
		with data.tcb as tcb
		with data.max_age_seconds as 3600
		with data.max_clock_skew_seconds as 60
		with data.min_tee_tcb_svn as {"tdx": "0305"}
		with data.min_gpus as 1
}

# denied_with(patch, reason): applying the JSON patch to good denies, and
# one reason contains the given text.
denied_with(patch, reason) if {
	inp := json.patch(good, patch)
	not allowed(inp)
	some r in reasons(inp)
	contains(r, reason)
}

test_good_allowed if {
	allowed(good)
	count(reasons(good)) == 0
}

test_shipped_data_denies_everything if {
	not policy.allow with input as good
	some r in policy.deny with input as good
	contains(r, "measurement mrtd")
}

test_simulated_flag if denied_with([{"op": "replace", "path": "/simulated", "value": true}], "simulated")

test_simulated_flag_missing if denied_with([{"op": "remove", "path": "/simulated"}], "simulated evidence")

test_simulated_tee if denied_with([{"op": "replace", "path": "/tee", "value": "simulated"}], "simulated TEE")

test_simulated_gpu if denied_with([{"op": "replace", "path": "/gpus/0/arch", "value": "simulated"}], "simulated GPU")

test_unknown_tee if denied_with([{"op": "replace", "path": "/tee", "value": "sev"}], "unsupported TEE")

test_no_tee if denied_with([{"op": "remove", "path": "/tee"}], "no TEE kind")

test_version if denied_with([{"op": "replace", "path": "/version", "value": 2}], "schema version")

test_no_now if denied_with([{"op": "remove", "path": "/now"}], "input.now")

test_debug if denied_with([{"op": "replace", "path": "/debug", "value": true}], "debug")

test_debug_missing if denied_with([{"op": "remove", "path": "/debug"}], "debug")

test_tcb_missing if denied_with([{"op": "remove", "path": "/tcb"}], "TCB status is missing")

test_tcb_out_of_date if denied_with([{"op": "replace", "path": "/tcb/status", "value": "OutOfDate"}], "TCB status OutOfDate")

test_tcb_tolerated if {
	allowed(json.patch(good, [
		{"op": "replace", "path": "/tcb/status", "value": "SWHardeningNeeded"},
		{"op": "add", "path": "/tcb/advisory_ids", "value": ["INTEL-SA-00615"]},
	]))
}

test_tcb_tolerated_status_other_advisory if denied_with(
	[
		{"op": "replace", "path": "/tcb/status", "value": "SWHardeningNeeded"},
		{"op": "add", "path": "/tcb/advisory_ids", "value": ["INTEL-SA-00615", "INTEL-SA-00999"]},
	],
	"not tolerated",
)

test_tcb_toleration_expired if denied_with(
	[
		{"op": "replace", "path": "/tcb/status", "value": "SWHardeningNeeded"},
		{"op": "replace", "path": "/now", "value": "2027-01-01T00:00:00Z"},
		{"op": "replace", "path": "/created_at", "value": "2027-01-01T00:00:00Z"},
	],
	"not tolerated",
)

test_collateral_expired if denied_with([{"op": "add", "path": "/tcb/collateral_expired", "value": true}], "collateral is expired")

test_svn_below_minimum if denied_with([{"op": "replace", "path": "/tcb/tee_tcb_svn", "value": "0304"}], "TEE TCB SVN")

test_svn_one_component_below if denied_with([{"op": "replace", "path": "/tcb/tee_tcb_svn", "value": "02ff"}], "TEE TCB SVN")

test_svn_wrong_length if denied_with([{"op": "replace", "path": "/tcb/tee_tcb_svn", "value": "030600"}], "TEE TCB SVN")

test_mrtd_unknown if denied_with([{"op": "replace", "path": "/measurements/mrtd", "value": "00"}], "measurement mrtd")

test_mrseam_missing if denied_with([{"op": "remove", "path": "/measurements/mrseam"}], "measurement mrseam")

test_measurements_missing if denied_with([{"op": "remove", "path": "/measurements"}], "measurement mrtd")

test_reference_missing_for_tee if {
	some r in policy.deny with input as good with data.reference as {}
	contains(r, "no reference measurements configured")
}

test_reference_must_pin_mrtd if {
	some r in policy.deny with input as good with data.reference as {"tdx": {"mrseam": [mrseam]}}
	contains(r, "must pin mrtd")
}

test_sgx_must_pin if {
	inp := json.patch(good, [{"op": "replace", "path": "/tee", "value": "sgx"}])
	some r in policy.deny with input as inp with data.reference as {"sgx": {}}
	contains(r, "must pin mrenclave or mrsigner")
}

test_min_gpus if denied_with([{"op": "replace", "path": "/gpus", "value": []}], "fewer GPUs")

test_gpu_devtools if denied_with([{"op": "replace", "path": "/gpus/0/cc_mode", "value": "devtools"}], "devtools")

test_gpu_cc_off if denied_with([{"op": "replace", "path": "/gpus/0/cc_mode", "value": "off"}], "confidential computing mode is \"off\"")

test_gpu_cc_missing if denied_with([{"op": "remove", "path": "/gpus/0/cc_mode"}], "confidential computing mode is \"\"")

test_gpu_signature if denied_with([{"op": "replace", "path": "/gpus/0/signature_valid", "value": false}], "signature is not valid")

test_gpu_chain if denied_with([{"op": "remove", "path": "/gpus/0/chain_valid"}], "certificate chain is not valid")

test_gpu_nonce if denied_with([{"op": "replace", "path": "/gpus/0/nonce_matched", "value": false}], "report nonce")

test_gpu_measurements if denied_with([{"op": "replace", "path": "/gpus/0/measurements_matched", "value": "not_checked"}], "measurements are \"not_checked\"")

test_gpu_driver if denied_with([{"op": "replace", "path": "/gpus/0/driver_version", "value": "535.86.09"}], "driver version")

test_gpu_vbios if denied_with([{"op": "replace", "path": "/gpus/0/vbios_version", "value": "96.00.5E.00.01"}], "VBIOS version")

test_gpu_allow_lists_missing if {
	some r in policy.deny with input as good with data.reference as reference with data.gpu as {}
	contains(r, "driver version")
}

test_binding_missing if denied_with([{"op": "remove", "path": "/binding"}], "key binding is missing")

test_binding_report_data if denied_with([{"op": "replace", "path": "/binding/report_data_matched", "value": false}], "report data does not bind")

test_binding_gpu_nonces if denied_with([{"op": "remove", "path": "/binding/gpu_nonces_matched"}], "GPU nonces do not match")

test_age_seconds if denied_with([{"op": "replace", "path": "/age_seconds", "value": 3601}], "older than the maximum")

test_age_from_created_at if denied_with([{"op": "replace", "path": "/now", "value": "2026-11-27T13:00:00Z"}], "evidence is 4200 s old")

test_age_unknown if denied_with(
	[{"op": "remove", "path": "/age_seconds"}, {"op": "remove", "path": "/created_at"}],
	"evidence age is unknown",
)

test_created_in_future if denied_with([{"op": "replace", "path": "/created_at", "value": "2026-11-27T12:02:00Z"}], "in the future")

test_created_within_skew if allowed(json.patch(good, [{"op": "replace", "path": "/created_at", "value": "2026-11-27T12:00:30Z"}]))

test_max_age_missing if {
	some r in policy.deny with input as good with data.max_age_seconds as null
	r == "max_age_seconds is not configured"
}

# --- SEV-SNP TCB minimums -------------------------------------------------

snp_parts(bl, snp, ucode) := {"fmc": 0, "boot_loader": bl, "tee": 0, "snp": snp, "microcode": ucode}

snp_good := json.patch(good, [
	{"op": "replace", "path": "/tee", "value": "sev-snp"},
	{"op": "replace", "path": "/measurements", "value": {"measurement": "ee"}},
	{"op": "replace", "path": "/tcb", "value": {"status": "Unknown", "snp": {
		"product_line": "Milan", "signer": "vcek",
		"reported": snp_parts(3, 24, 219), "committed": snp_parts(3, 24, 219),
	}}},
])

snp_min := {"min_tcb": {"Milan": {"boot_loader": 0, "tee": 0, "snp": 24, "microcode": 219}}}

snp_reasons(inp) := r if {
	r := policy.deny with input as inp
		with data.reference as reference
		with data.gpu as gpu
		with data.tcb as tcb
		with data.sev_snp as snp_min
		with data.max_age_seconds as 3600
		with data.max_clock_skew_seconds as 60
		with data.min_tee_tcb_svn as {}
		with data.min_gpus as 1
}

snp_denied(patch, reason) if {
	some r in snp_reasons(json.patch(snp_good, patch))
	contains(r, reason)
}

test_snp_at_minimum_allowed if count(snp_reasons(snp_good)) == 0

test_snp_status_derived_up_to_date if {
	policy.effective_tcb_status == "UpToDate" with input as snp_good with data.sev_snp as snp_min
}

# The real Milan fixture's TCB (bl 2, snp 5, microcode 0x44 = 68) is below
# AMD-SB-3019's minimum: OutOfDate, refused.
test_snp_milan_fixture_out_of_date if {
	inp := json.patch(snp_good, [
		{"op": "replace", "path": "/tcb/snp/reported", "value": snp_parts(2, 5, 68)},
		{"op": "replace", "path": "/tcb/snp/committed", "value": snp_parts(2, 5, 68)},
	])
	policy.effective_tcb_status == "OutOfDate" with input as inp with data.sev_snp as snp_min
	some r in snp_reasons(inp)
	r == "SEV-SNP TCB is below the minimum stated for Milan: committed microcode SPL 68 < 219, committed snp SPL 5 < 24, reported microcode SPL 68 < 219, reported snp SPL 5 < 24"
	some r2 in snp_reasons(inp)
	startswith(r2, "TCB status OutOfDate is not UpToDate")
}

test_snp_committed_below if snp_denied([{"op": "replace", "path": "/tcb/snp/committed/snp", "value": 23}], "committed snp SPL 23 < 24")

test_snp_reported_below if snp_denied([{"op": "replace", "path": "/tcb/snp/reported/microcode", "value": 218}], "reported microcode SPL 218 < 219")

test_snp_component_missing if snp_denied([{"op": "remove", "path": "/tcb/snp/reported/snp"}], "reported snp SPL -1 < 24")

test_snp_verifier_out_of_date_kept if snp_denied([{"op": "replace", "path": "/tcb/status", "value": "OutOfDate"}], "TCB status OutOfDate")

test_snp_no_minimum_for_product_line if {
	inp := json.patch(snp_good, [{"op": "replace", "path": "/tcb/snp/product_line", "value": "Genoa"}])
	some r in snp_reasons(inp)
	r == "SEV-SNP minimum TCB is not stated for product line \"Genoa\" (data.sev_snp.min_tcb)"
	some r2 in snp_reasons(inp)
	startswith(r2, "TCB status Unknown is not UpToDate")
}

test_snp_versions_missing if snp_denied([{"op": "remove", "path": "/tcb/snp"}], "SEV-SNP TCB versions are missing")

test_snp_no_minimums_at_all if {
	some r in policy.deny with input as snp_good with data.reference as reference with data.sev_snp as {}
	startswith(r, "TCB status Unknown")
}

test_snp_out_of_date_tolerated if {
	inp := json.patch(snp_good, [{"op": "replace", "path": "/tcb/snp/reported/snp", "value": 5}])
	r := policy.deny with input as inp
		with data.reference as reference
		with data.gpu as gpu
		with data.tcb as {"tolerated": [{"status": "OutOfDate", "advisory_ids": [], "until": "2027-01-01T00:00:00Z"}]}
		with data.sev_snp as snp_min
		with data.max_age_seconds as 3600
		with data.max_clock_skew_seconds as 60
		with data.min_tee_tcb_svn as {}
		with data.min_gpus as 1
	count(r) == 0
}
