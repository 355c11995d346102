// Package policies decides whether verified attestation claims are
// acceptable, by evaluating Rego policies (Open Policy Agent, Rego v1) over
// them (DESIGN §3.5). A policy is a Rego module in package teegate.policy
// that defines a set rule deny of human-readable reason strings and a
// boolean rule allow (conventionally `allow if count(deny) == 0` with
// `default allow := false`); its reference values are a JSON data document
// loaded beside it (NAME.rego + NAME.data.json or NAME.data/*.json) and
// mounted at the root of data. The input document is the JSON form of
// attest/claims.Claims plus "now" (RFC 3339, UTC, whole seconds) so that
// age and date rules are deterministic. Evaluation fails closed: an error,
// an undefined result, or a policy missing allow or deny yields a deny
// Decision with a reason. A Policy is immutable after Load/LoadBytes, safe
// for concurrent Eval, and identified by a hash over its source and
// canonical data. The shipped production and dev policies are embedded and
// available through Builtin (Resolve takes a builtin name or a file path);
// README.md documents the contract and the data schema.
//
// Long-running services hold the current policy in a Holder, whose Evaluate
// (like Policy.Evaluate, the shape consumers' small Policy interfaces
// declare) always uses one whole policy, and swap it when a Watcher, which
// polls the policy and data files and can be forced with Reload, reports a
// policy that compiled; a failed reload reports the error and changes
// nothing.
package policies
