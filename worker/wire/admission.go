package wire

// The worker's half of admission (DESIGN §4): what a worker presents when
// it connects to NATS, and the subjects on which it talks to the admission
// service (gateway/admission). The gateway's half lives there; this file
// is all a worker needs to know.

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/teegate/teegate/attest"
)

// ConnectDomain separates the connect proof from everything else the
// epoch's signing key signs (bundles, receipts): the server picks the
// nonce, and NATS is outside the trusted base, so the key must never sign
// a server-chosen byte string as it is.
const ConnectDomain = "teegate/nats-connect/v1"

// Admission subjects, answered by the admission service. A connection
// may publish only on the submit and evidence subjects that carry its own
// nkey (its user JWT says so), so the service learns who is asking from the
// subject: NATS, not the message, vouches for it.
const (
	// SubmitPrefix + "." + nkey (SubmitSubject) takes an evidence bundle
	// (canonical bytes) whose signing key is the connection's nkey and
	// replies with the AdmissionStatus it earns now; admitted bundles are
	// stored in the evidence bucket. This is how a worker bootstraps: its
	// first connection is quarantined because its evidence is not stored
	// yet.
	SubmitPrefix = SubjectPrefix + ".admission.submit"
	// EvidencePrefix + "." + nkey (EvidenceSubject) takes a further bundle
	// of an admitted key (a fresh-mode batch quote) and replies with an
	// AdmissionStatus whose Error is empty once the bundle is stored.
	EvidencePrefix = SubjectPrefix + ".admission.evidence"
	// StatusSubject takes an evidence id and replies with the latest
	// AdmissionStatus recorded for it.
	StatusSubject = SubjectPrefix + ".admission.status"
	// AdmissionWildcard covers them all.
	AdmissionWildcard = SubjectPrefix + ".admission.>"
)

// SubmitSubject is where the connection whose key is nkey submits its
// evidence.
func SubmitSubject(nkey string) string { return SubmitPrefix + "." + nkey }

// EvidenceSubject is where the admitted connection whose key is nkey
// stores further bundles of that key.
func EvidenceSubject(nkey string) string { return EvidencePrefix + "." + nkey }

// UserInfoSubject is the server's "who am I" service: a connection learns
// the permissions the server enforces on it, which is how a worker tells an
// admitted connection from a quarantined one without trusting anybody's
// word for it.
const UserInfoSubject = "$SYS.REQ.USER.INFO"

// WorkerInboxRoot is the root of workers' inboxes. Each worker connection
// gets its own subtree, named by its key (WorkerInboxPrefix), so that it
// may subscribe to its replies without seeing anybody else's, and so that
// the gateway can tell a subject in a worker's own space (AckSubjectOK).
const WorkerInboxRoot = "_TGW"

// GatewayInboxRoot is the root of the gateway's reply inboxes. No worker
// may subscribe there; a worker publishes there only as a response to a
// request it received (NATS response permissions), and each inbox is
// random per request.
const GatewayInboxRoot = "_TGG"

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
	// RetryAfter, in whole seconds, is set with Error when the key sent
	// more than its rate allows: the same request may succeed after it.
	RetryAfter int `json:"retry_after,omitempty"`
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

// AckSubjectOK reports whether subject is a literal subject inside the
// inbox space of the worker connection whose key is nkey: the only kind of
// subject the gateway publishes stream acks and cancels to.
func AckSubjectOK(subject, nkey string) bool {
	rest, ok := strings.CutPrefix(subject, WorkerInboxPrefix(nkey)+".")
	return ok && nkey != "" && len(subject) <= 256 && literalTokens(rest)
}

// NKeyOfBundle is the NATS user nkey of a bundle's signing key: the key a
// connection presenting that bundle proves and whose inbox space it owns.
func NKeyOfBundle(b *attest.Bundle) (string, error) { return WorkerNKey(b.SigningPub) }

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
