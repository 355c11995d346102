package wire

import "time"

// RegistryBucket is the JetStream key-value bucket where each serving
// worker connection keeps its record, refreshed every heartbeat. The key is
// the evidence id the connection was admitted on, which its user JWT lets it
// write and nobody else: a worker cannot write or delete another's record
// by naming its worker id. (A worker with static credentials on a bus
// without admission uses its worker id.) The gateway watches the bucket to
// learn which models exist, and ignores a record whose key is neither its
// evidence id nor its worker id.
const RegistryBucket = "teegate_workers"

// RecordTTL is how long a record stays live after its last heartbeat. The
// gateway ignores older records; workers refresh well within it.
const RecordTTL = 15 * time.Second

// ModelInfo is one model a worker serves, in OpenAI model-object terms.
type ModelInfo struct {
	ID      string `json:"id"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// WorkerRecord is a worker's registry entry: one per serving connection,
// keyed by the evidence id it was admitted on (or the worker id). It never
// contains request or response content: counts and names only.
type WorkerRecord struct {
	ID         string      `json:"id"`
	Version    string      `json:"version"`
	Models     []ModelInfo `json:"models"`
	TEE        string      `json:"tee,omitempty"`
	EvidenceID string      `json:"evidence_id,omitempty"`
	// MaxConcurrency is how many requests the worker serves at once; a
	// gateway never has more than this in flight on it.
	MaxConcurrency int `json:"max_concurrency"`
	// InFlight is how many requests the worker was serving when it wrote
	// the record. It is refreshed every heartbeat and when the count
	// crosses a quarter of MaxConcurrency (InFlightStep), not on every
	// request: gateways combine it with their own counts.
	InFlight int `json:"in_flight"`
	// Ready: the engine answered the worker's last model refresh, so the
	// worker can serve. A record that is not ready keeps its models (they
	// exist, nobody can serve them now) and is not routed to.
	Ready bool `json:"ready"`
	// Draining: the worker takes no new work; it finishes what it has.
	Draining    bool      `json:"draining"`
	StartedAt   time.Time `json:"started_at"`
	HeartbeatAt time.Time `json:"heartbeat_at"`
}

// Routable reports whether a gateway may send rec new requests: it is
// ready, not draining, and has capacity.
func (r WorkerRecord) Routable() bool {
	return r.Ready && !r.Draining && r.MaxConcurrency > 0
}

// Serves reports whether rec lists model.
func (r WorkerRecord) Serves(model string) bool {
	for _, m := range r.Models {
		if m.ID == model {
			return true
		}
	}
	return false
}

// InFlightStep is the change of in-flight count (as a share of
// MaxConcurrency, at least 1) that makes a worker publish its record
// before the next heartbeat.
func InFlightStep(maxConcurrency int) int {
	return max(1, maxConcurrency/4)
}

// DirectSubject is where the serving connection whose registry key is key
// takes requests for model, outside any queue group: a gateway that picked
// that connection by its advertised capacity sends there. key is the
// record key (an evidence id, or a worker id), one token after Token.
// Every serving connection also serves InferSubject(model) in QueueGroup
// (gateways that do not pick).
func DirectSubject(model, key string) string {
	return InferSubject(model) + "." + Token(key)
}

// EvidenceBucket is the JetStream key-value bucket of evidence bundles,
// keyed by bundle id, holding canonical bundle bytes. Only the admission
// service writes it: the bundles it admitted, and the fresh-mode batch
// bundles admitted workers hand it over EvidenceSubject, each verified and
// bound to the key of the connection that sent it.
const EvidenceBucket = "teegate_evidence"

// AttestSubject is where a worker serving model answers requests for fresh
// evidence: the request's HdrNonce is the client's nonce; the reply data are
// canonical bundle bytes.
func AttestSubject(model string) string {
	return SubjectPrefix + ".attest." + Token(model)
}
