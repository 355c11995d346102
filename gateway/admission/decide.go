package admission

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/worker/wire"
)

// credentials are what a worker's CONNECT carries, as the callout request
// reports them.
type credentials struct {
	EvidenceID string // user name
	NKey       string // "U…"
	Sig        string // base64url signature over wire.ConnectSigningInput(nonce)
	Nonce      string // the server's nonce for this connection
}

// parsed credentials: the proven key and the evidence id it claims.
type proven struct {
	evidenceID string
	nkey       string
	pub        ed25519.PublicKey
}

// parseCredentials checks the form of the credentials and the key proof.
// It is the decoder every CONNECT goes through, so it is fuzzed.
func parseCredentials(c credentials) (proven, error) {
	if !isEvidenceID(c.EvidenceID) {
		return proven{}, fmt.Errorf("user name is not an evidence id: %w", ErrCredentials)
	}
	raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(c.NKey))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return proven{}, fmt.Errorf("nkey is not a user key: %w", ErrCredentials)
	}
	if c.Nonce == "" || c.Sig == "" {
		return proven{}, fmt.Errorf("no nonce or no signature: %w", ErrCredentials)
	}
	sig, err := base64.RawURLEncoding.DecodeString(c.Sig)
	if err != nil {
		// nats.go sends raw URL encoding; other clients may pad.
		if sig, err = base64.URLEncoding.DecodeString(c.Sig); err != nil {
			return proven{}, fmt.Errorf("signature encoding: %w", ErrCredentials)
		}
	}
	if len(sig) != ed25519.SignatureSize {
		return proven{}, fmt.Errorf("signature of %d bytes: %w", len(sig), ErrCredentials)
	}
	pub := ed25519.PublicKey(raw)
	if !ed25519.Verify(pub, wire.ConnectSigningInput([]byte(c.Nonce)), sig) {
		return proven{}, ErrKeyProof
	}
	return proven{evidenceID: c.EvidenceID, nkey: c.NKey, pub: pub}, nil
}

// isEvidenceID: lowercase hex SHA-256, as attest.BundleID writes it.
func isEvidenceID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// verdict is the outcome for one connection or submission.
type verdict struct {
	p  proven
	vd *attest.Verified // nil when the evidence could not be verified
	// err is nil when admitted; refuses(err) tells refusal from quarantine.
	err     error
	reasons []string
	policy  string
	now     time.Time
	expires time.Time
}

func (v *verdict) admitted() bool { return v.err == nil }

// decide runs the callout decision for proven credentials at now.
func (s *Service) decide(ctx context.Context, p proven, now time.Time) *verdict {
	v := &verdict{p: p, now: now}
	vd, err := s.evidence(ctx, p.evidenceID)
	if err != nil {
		v.err = err
		v.reasons = []string{reason(err)}
		return v
	}
	if !bytes.Equal(vd.Bundle.SigningPub, p.pub) {
		v.err = ErrKeyMismatch
		return v
	}
	s.judge(ctx, v, vd)
	return v
}

// judge applies identity checks, the policy and the expiry rule to
// verified evidence.
func (s *Service) judge(ctx context.Context, v *verdict, vd *attest.Verified) {
	v.vd = vd
	if err := checkIdentity(vd.Bundle.Worker); err != nil {
		v.err, v.reasons = err, []string{reason(err)}
		return
	}
	pol := s.policy()
	v.policy = policyID(pol)
	allow, reasons, err := pol.Evaluate(ctx, vd.Claims, v.now)
	switch {
	case err != nil:
		v.err = fmt.Errorf("%w: %w", ErrPolicyFailed, err)
		v.reasons = append([]string{ErrPolicyFailed.Error()}, reasons...)
		return
	case !allow:
		v.err = ErrPolicyDenied
		v.reasons = reasons
		if len(v.reasons) == 0 {
			v.reasons = []string{ErrPolicyDenied.Error()}
		}
		return
	}
	v.expires = v.now.Add(s.cfg.Lease)
	if s.cfg.Verify.MaxAge > 0 {
		if end := vd.Bundle.Created.Add(s.cfg.Verify.MaxAge); end.Before(v.expires) {
			v.expires = end
		}
	}
	// JWT expiry has second precision; an admission shorter than the
	// minimum would expire before the worker could use it.
	if v.expires.Sub(v.now) < s.cfg.MinLease {
		v.err = ErrExpiring
		v.reasons = []string{fmt.Sprintf("evidence expires at %s, sooner than the minimum admission of %s", v.expires.UTC().Format(time.RFC3339), s.cfg.MinLease)}
	}
}

// evidence returns the verified bundle for id: from the verifier's cache,
// or fetched from the evidence bucket and verified.
func (s *Service) evidence(ctx context.Context, id string) (*attest.Verified, error) {
	if vd, ok := s.verifier.Known(id); ok {
		return vd, nil
	}
	e, err := s.evKV.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, ErrEvidenceMissing
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading evidence: %w", ErrEvidenceMissing, err)
	}
	raw := e.Value()
	if attest.BundleID(raw) != id {
		return nil, ErrEvidenceCorrupt
	}
	vd, err := s.verifier.Bundle(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEvidenceRejected, err)
	}
	return vd, nil
}

// checkIdentity: the worker id must be one KV key token (it is shown in
// the registry record and listings) and the bundle must name the models it
// serves (they become its subscribe permissions).
func checkIdentity(id attest.WorkerIdentity) error {
	if !isKVToken(id.ID) {
		return fmt.Errorf("worker id is not a single key token: %w", ErrIdentity)
	}
	if len(id.Models) == 0 {
		return fmt.Errorf("evidence names no models: %w", ErrIdentity)
	}
	return nil
}

func isKVToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '=') {
			return false
		}
	}
	return true
}

// reason is the operator-facing text of a decision error. The errors here
// never carry request content (there is none at connect time).
func reason(err error) string { return err.Error() }

// Subjects a worker's permissions are built from.
const (
	registryKVPrefix = "$KV." + wire.RegistryBucket + "."
	streamInfoPrefix = "$JS.API.STREAM.INFO.KV_"
	userInfoSubject  = wire.UserInfoSubject
	attestWildcard   = wire.SubjectPrefix + ".attest.>"
)

// microSubjects are the discovery subjects of the workers' micro service
// ($SRV.PING, $SRV.PING.teegate-worker, $SRV.PING.teegate-worker.<id>,
// the same for INFO and STATS): all a worker needs of $SRV.
var microSubjects = []string{"$SRV.*", "$SRV.*." + wire.ServiceName, "$SRV.*." + wire.ServiceName + ".*"}

// admittedPermissions (docs/architecture.md, "Who may do what on the bus"):
// subscribe to the bundle's models (inference in the queue group and on
// its own direct subjects, wire.DirectSubject keyed by its evidence id, and
// attestation), to micro
// discovery and to the connection's own inboxes; publish its own registry
// record (keyed by its evidence id), the stream-info request that binds
// the registry, its own admission subjects, user info; and replies: only
// to requests it received, at most resp.MaxMsgs each within resp.Expires
// (NATS response permissions). Nothing else: no other model, no other
// inbox, no evidence or decision writes, no JetStream management.
func admittedPermissions(b *attest.Bundle, evidenceID, nkey string, resp jwt.ResponsePermission) jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(
		registryKVPrefix+evidenceID,
		streamInfoPrefix+wire.RegistryBucket,
		wire.SubmitSubject(nkey),
		wire.EvidenceSubject(nkey),
		wire.StatusSubject,
		userInfoSubject,
	)
	p.Resp = &resp
	models := append([]string(nil), b.Worker.Models...)
	sort.Strings(models)
	for _, m := range models {
		// Its own direct subjects only: another connection's (keyed by
		// another evidence id) stays out of reach.
		p.Sub.Allow.Add(wire.InferSubject(m), wire.DirectSubject(m, evidenceID), wire.AttestSubject(m))
	}
	p.Sub.Allow.Add(microSubjects...)
	p.Sub.Allow.Add(wire.WorkerInboxPrefix(nkey) + ".>")
	return p
}

// quarantinePermissions: enough to submit its own evidence, ask why, and
// read the replies; inference subjects are denied explicitly (deny wins
// over any allow), so the server refuses such a subscription with a
// permissions violation. No response permission: it receives no requests.
func quarantinePermissions(nkey string) jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(wire.SubmitSubject(nkey), wire.StatusSubject, userInfoSubject)
	p.Sub.Allow.Add(wire.WorkerInboxPrefix(nkey) + ".>")
	p.Sub.Deny.Add(wire.InferWildcard, attestWildcard)
	p.Pub.Deny.Add(wire.InferWildcard)
	return p
}

// userJWT issues the user claims for an authorized connection.
func (s *Service) userJWT(userNkey string, v *verdict) (string, error) {
	uc := jwt.NewUserClaims(userNkey)
	uc.Audience = s.cfg.Account // the placement account in server-config mode
	if v.admitted() {
		uc.Name = v.vd.Bundle.Worker.ID
		uc.Permissions = admittedPermissions(v.vd.Bundle, v.vd.ID, v.p.nkey,
			jwt.ResponsePermission{MaxMsgs: s.cfg.ReplyMaxMsgs, Expires: s.cfg.ReplyExpires})
		uc.Expires = v.expires.Unix()
	} else {
		uc.Name = "quarantined"
		uc.Permissions = quarantinePermissions(v.p.nkey)
		uc.Expires = v.now.Add(s.cfg.QuarantineLease).Unix()
	}
	tok, err := uc.Encode(s.cfg.Issuer)
	if err != nil {
		return "", fmt.Errorf("encoding user claims: %w", err)
	}
	return tok, nil
}

// summarize keeps what an operator needs to see of the claims.
func summarize(c *claims.Claims) *ClaimsSummary {
	if c == nil {
		return nil
	}
	s := &ClaimsSummary{TEE: c.TEE, Simulated: c.Simulated, Debug: c.Debug, CreatedAt: c.CreatedAt, AgeSeconds: c.AgeSeconds}
	if c.TCB != nil {
		s.TCBStatus = c.TCB.Status
	}
	if m := c.Measurements; m != nil {
		s.MRTD, s.MREnclave, s.Measurement = m["mrtd"], m["mrenclave"], m["measurement"]
	}
	for _, g := range c.GPUs {
		s.GPUs = append(s.GPUs, g.Arch)
	}
	return s
}
