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

// WorkerRecord is a worker's registry entry. It never contains request or
// response content.
type WorkerRecord struct {
	ID             string      `json:"id"`
	Version        string      `json:"version"`
	Models         []ModelInfo `json:"models"`
	TEE            string      `json:"tee,omitempty"`
	EvidenceID     string      `json:"evidence_id,omitempty"`
	MaxConcurrency int         `json:"max_concurrency"`
	StartedAt      time.Time   `json:"started_at"`
	HeartbeatAt    time.Time   `json:"heartbeat_at"`
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
