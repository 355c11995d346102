// Package admission decides which workers may receive requests, and has
// NATS enforce it (DESIGN §4). It is the nats-server auth callout: every
// connection that is not a static service user is judged here. A worker
// connects with its evidence id as user name, its epoch signing key as
// nkey, and a signature over a domain string and the server's nonce
// (worker/wire/admission.go); the service verifies the signature, fetches the bundle from
// the evidence bucket, verifies it (attest), checks that it binds that very
// key, and evaluates the policy over the claims. Admitted, the connection
// gets a user JWT allowing exactly its models' subjects, micro discovery,
// its own inboxes and its own registry record, expiring at min(evidence
// created + max age, now + lease). A connection that proves its key but
// fails (evidence missing, rejected, policy denied) is quarantined: it may
// only submit evidence and ask why, and the server answers any subscription
// to inference subjects with a permissions violation. A connection without
// a valid key proof is refused. Decisions are recorded per evidence id in
// the teegate_admission bucket. Reload and Recheck re-judge admitted
// connections; the losers get a lame-duck notice so they drain, and are
// kicked after a grace period; JWT expiry bounds everything else.
package admission
