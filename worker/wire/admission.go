package wire

// The worker's half of admission (DESIGN §4): what a worker presents when
// it connects to NATS, and the subjects on which it talks to the admission
// service (gateway/admission). The gateway's half lives there; this file
// is all a worker needs to know.

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ConnectDomain separates the connect proof from everything else the
// epoch's signing key signs (bundles, receipts): the server picks the
// nonce, and NATS is outside the trusted base, so the key must never sign
// a server-chosen byte string as it is.
const ConnectDomain = "teegate/nats-connect/v1"

// Admission subjects, answered by the admission service. Quarantined and
// admitted workers may publish to them (requests); nobody else needs to.
const (
	// SubmitSubject takes an evidence bundle (canonical bytes) and replies
	// with the AdmissionStatus it earns now; verified bundles are stored in
	// the evidence bucket. This is how a worker bootstraps: its first
	// connection is quarantined because its evidence is not stored yet.
	SubmitSubject = SubjectPrefix + ".admission.submit"
	// StatusSubject takes an evidence id and replies with the latest
	// AdmissionStatus recorded for it.
	StatusSubject = SubjectPrefix + ".admission.status"
	// AdmissionWildcard covers both.
	AdmissionWildcard = SubjectPrefix + ".admission.>"
)

// UserInfoSubject is the server's "who am I" service: a connection learns
// the permissions the server enforces on it, which is how a worker tells an
// admitted connection from a quarantined one without trusting anybody's
// word for it.
const UserInfoSubject = "$SYS.REQ.USER.INFO"

// WorkerInboxRoot is the root of workers' inboxes. Each worker connection
// gets its own subtree, named by its key (WorkerInboxPrefix), so that it
// may subscribe to its replies without seeing anybody else's.
const WorkerInboxRoot = "_TGW"

// AdmissionStatus is the reply to SubmitSubject and StatusSubject.
type AdmissionStatus struct {
	EvidenceID string `json:"evidence_id"`
	WorkerID   string `json:"worker_id,omitempty"`
	// Allow: a connection presenting this evidence (and its key) is
	// admitted, until ExpiresAt.
	Allow       bool      `json:"allow"`
	Reasons     []string  `json:"reasons,omitempty"`
	EvaluatedAt time.Time `json:"evaluated_at,omitzero"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	// Error is set when the request itself failed (unknown id, oversized
	// bundle); the other fields are then empty.
	Error string `json:"error,omitempty"`
}

// ConnectSigningInput is what a worker signs to prove it holds the signing
// key of its evidence: ConnectDomain || 0x00 || the server's INFO nonce.
func ConnectSigningInput(nonce []byte) []byte {
	b := make([]byte, 0, len(ConnectDomain)+1+len(nonce))
	b = append(b, ConnectDomain...)
	b = append(b, 0)
	return append(b, nonce...)
}

// ErrWorkerKey: a signing key that is not an Ed25519 public key.
var ErrWorkerKey = errors.New("worker signing key is not an Ed25519 public key")

// WorkerNKey is the NATS user nkey ("U…") naming an Ed25519 signing key.
func WorkerNKey(signingPub []byte) (string, error) {
	if len(signingPub) != ed25519.PublicKeySize {
		return "", fmt.Errorf("encoding worker nkey: key of %d bytes: %w", len(signingPub), ErrWorkerKey)
	}
	b, err := nkeys.Encode(nkeys.PrefixByteUser, signingPub)
	if err != nil {
		return "", fmt.Errorf("encoding worker nkey: %w", err)
	}
	return string(b), nil
}

// WorkerInboxPrefix is the inbox prefix of the worker connection whose key
// is nkey; the connection must use it (nats.CustomInboxPrefix).
func WorkerInboxPrefix(nkey string) string { return WorkerInboxRoot + "." + nkey }

// WorkerConnectOptions are the nats.go options a worker connects with:
// user name = evidence id, nkey = the evidence's signing key, the server's
// nonce signed with ConnectSigningInput by sign (the epoch key, inside the
// TEE), and the connection's own inbox prefix. A connection belongs to one
// key epoch: a new epoch means a new connection.
func WorkerConnectOptions(evidenceID string, signingPub []byte, sign func([]byte) ([]byte, error)) ([]nats.Option, error) {
	if evidenceID == "" || sign == nil {
		return nil, errors.New("worker connect options: evidence id and signer are required")
	}
	nk, err := WorkerNKey(signingPub)
	if err != nil {
		return nil, err
	}
	return []nats.Option{
		nats.UserInfo(evidenceID, ""),
		nats.Nkey(nk, func(nonce []byte) ([]byte, error) { return sign(ConnectSigningInput(nonce)) }),
		nats.CustomInboxPrefix(WorkerInboxPrefix(nk)),
	}, nil
}
