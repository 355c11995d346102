package wire

import "time"

// RegistryBucket is the JetStream key-value bucket where each worker keeps
// its record (key = worker id), refreshed every heartbeat. The gateway
// watches it to learn which models exist.
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
// keyed by bundle id, holding canonical bundle bytes. Workers publish each
// epoch's bundle and each fresh-mode batch bundle before using it.
const EvidenceBucket = "teegate_evidence"

// AttestSubject is where a worker serving model answers requests for fresh
// evidence: the request's HdrNonce is the client's nonce; the reply data are
// canonical bundle bytes.
func AttestSubject(model string) string {
	return SubjectPrefix + ".attest." + Token(model)
}
