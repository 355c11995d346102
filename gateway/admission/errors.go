package admission

import "errors"

// Why a connection was not admitted. The first three refuse the connection
// outright (nothing proves who is connecting, so there is nobody to tell);
// the others quarantine it: the worker holds the key its evidence names and
// may learn why it was turned away.
var (
	// ErrCredentials: the user name is not an evidence id, the nkey is not
	// a user nkey, or the signature or nonce is missing or malformed.
	ErrCredentials = errors.New("malformed worker credentials")
	// ErrKeyProof: the nonce signature does not verify with the nkey.
	ErrKeyProof = errors.New("key proof invalid")
	// ErrKeyMismatch: the evidence binds another signing key than the one
	// that proved itself.
	ErrKeyMismatch = errors.New("key is not the evidence's signing key")

	// ErrEvidenceMissing: no bundle is stored under the evidence id; the
	// worker should submit it (wire.SubmitSubject).
	ErrEvidenceMissing = errors.New("evidence not submitted")
	// ErrEvidenceCorrupt: the stored bytes are not the bundle the id names.
	ErrEvidenceCorrupt = errors.New("stored evidence does not match its id")
	// ErrEvidenceRejected: the bundle failed verification (wraps the attest
	// error, for example attest.ErrEvidenceExpired).
	ErrEvidenceRejected = errors.New("evidence rejected")
	// ErrIdentity: the bundle's worker identity cannot be turned into
	// permissions (no models, or an id that is not one subject token).
	ErrIdentity = errors.New("worker identity unusable")
	// ErrPolicyDenied: the policy denied the claims.
	ErrPolicyDenied = errors.New("policy denied")
	// ErrPolicyFailed: evaluating the policy failed (which denies).
	ErrPolicyFailed = errors.New("policy evaluation failed")
	// ErrExpiring: the admission would end too soon to be useful.
	ErrExpiring = errors.New("evidence expires too soon")
	// ErrRateLimited: the connection's key submitted more than its share
	// (Config.SubmitRate, EvidenceRate); it should ask again later.
	ErrRateLimited = errors.New("too many submissions from this key; retry later")
)

// refuses reports whether err refuses the connection rather than
// quarantining it.
func refuses(err error) bool {
	return errors.Is(err, ErrCredentials) || errors.Is(err, ErrKeyProof) || errors.Is(err, ErrKeyMismatch)
}
