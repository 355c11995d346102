# Unit tests of dev.rego (run by `go test ./policies/...` or `opa test`).
package teegate.policy_test

import data.teegate.policy

good := {
	"version": 1,
	"tee": "simulated",
	"simulated": true,
	"debug": true,
	"measurements": {"mrtd": "00"},
	"report_data": "ab",
	"gpus": [{"index": 0, "arch": "simulated", "cc_mode": "devtools", "nonce_matched": true}],
	"binding": {"report_data_matched": true, "gpu_nonces_matched": true, "signing_key": "01"},
	"created_at": "2026-11-27T11:50:00Z",
	"age_seconds": 600,
	"now": "2026-11-27T12:00:00Z",
}

denied_with(patch, reason) if {
	inp := json.patch(good, patch)
	not policy.allow with input as inp
	some r in policy.deny with input as inp
	contains(r, reason)
}

test_simulated_debug_allowed if {
	policy.allow with input as good
	count(policy.deny) == 0 with input as good
}

test_no_gpus_allowed if policy.allow with input as json.patch(good, [{"op": "remove", "path": "/gpus"}])

test_version if denied_with([{"op": "replace", "path": "/version", "value": 0}], "schema version")

test_no_now if denied_with([{"op": "remove", "path": "/now"}], "input.now")

test_no_tee if denied_with([{"op": "remove", "path": "/tee"}], "no TEE kind")

test_binding_missing if denied_with([{"op": "remove", "path": "/binding"}], "key binding is missing")

test_binding_report_data if denied_with([{"op": "replace", "path": "/binding/report_data_matched", "value": false}], "report data does not bind")

test_binding_gpu_nonces if denied_with([{"op": "replace", "path": "/binding/gpu_nonces_matched", "value": false}], "GPU nonces do not match")

test_gpu_nonce if denied_with([{"op": "replace", "path": "/gpus/0/nonce_matched", "value": false}], "report nonce")

test_too_old if denied_with([{"op": "replace", "path": "/age_seconds", "value": 86401}], "older than the maximum")

test_age_unknown if denied_with(
	[{"op": "remove", "path": "/age_seconds"}, {"op": "remove", "path": "/created_at"}],
	"evidence age is unknown",
)

test_created_in_future if denied_with([{"op": "replace", "path": "/created_at", "value": "2026-11-28T00:00:00Z"}], "in the future")

test_max_age_missing if {
	some r in policy.deny with input as good with data.max_age_seconds as null
	r == "max_age_seconds is not configured"
}
