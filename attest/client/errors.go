package client

import (
	"errors"
	"fmt"

	"github.com/teegate/teegate/attest"
)

// ErrVerification is wrapped by every error that reports an answer which
// did not verify. errors.Is also matches the underlying attest sentinel
// (attest.ErrResponseHash, attest.ErrReceiptSignature, …).
var ErrVerification = errors.New("teegate verification failed")

// Errors of checks this package adds to those of package attest.
var (
	// ErrNoReceipt: a verified endpoint answered without a receipt (no
	// Teegate-Receipt header, or a stream that ended without its receipt
	// event). Stream cases also match attest.ErrNoReceiptEvent.
	ErrNoReceipt = errors.New("no receipt")
	// ErrPolicy: the policy rejected the evidence's claims.
	ErrPolicy = errors.New("policy rejected the evidence")
	// ErrModelMismatch: the receipt names another model than the request.
	ErrModelMismatch = errors.New("receipt model differs from the requested model")
	// ErrStreamMismatch: the receipt's stream flag does not match how the
	// answer arrived.
	ErrStreamMismatch = errors.New("receipt stream flag differs from the response")
	// ErrDataAfterReceipt: a stream carried anything but the end of the
	// receipt event and [DONE] after its receipt line; nothing after the
	// receipt is covered by it. It is attest.ErrDataAfterReceipt, which
	// the offline verifiers report too.
	ErrDataAfterReceipt = attest.ErrDataAfterReceipt
	// ErrEvidenceFetch: the evidence bundle could not be obtained.
	ErrEvidenceFetch = errors.New("evidence not obtainable")
	// ErrTooLarge: a response or stream line exceeds the configured limit.
	ErrTooLarge = errors.New("response too large to verify")
)

// VerificationError is the error of a failed verification: Cause names the
// failed check in a word or two ("signature", "request hash", "response
// hash", "binding", "nonce", "receipt epoch", "receipt time", "batch proof",
// "evidence", "policy", "receipt", "model", "stream"), Err is what failed.
type VerificationError struct {
	Cause string
	Err   error
}

func (e *VerificationError) Error() string {
	return fmt.Sprintf("%v: %s: %v", ErrVerification, e.Cause, e.Err)
}

// Unwrap returns ErrVerification and the cause, so errors.Is matches both.
func (e *VerificationError) Unwrap() []error { return []error{ErrVerification, e.Err} }

// Cause returns the failed check named by a verification error, or "" when
// err is not one.
func Cause(err error) string {
	var ve *VerificationError
	if errors.As(err, &ve) {
		return ve.Cause
	}
	return ""
}

// fail wraps err as a VerificationError, naming the cause from the most
// specific attest sentinel it carries and falling back to stage.
func fail(stage string, err error) error {
	return &VerificationError{Cause: causeOf(stage, err), Err: err}
}

// causes is checked in order: binding before the generic evidence errors,
// so a bundle whose key is not bound reads "binding", not "evidence".
var causes = []struct {
	err   error
	cause string
}{
	{attest.ErrBindingReportData, "binding"},
	{attest.ErrBindingGPUNonce, "binding"},
	{attest.ErrReceiptSignature, "signature"},
	{attest.ErrRequestHash, "request hash"},
	{attest.ErrResponseHash, "response hash"},
	{attest.ErrNonceMismatch, "nonce"},
	{attest.ErrReceiptEpoch, "receipt epoch"},
	{attest.ErrReceiptTime, "receipt time"},
	{attest.ErrBatchProof, "batch proof"},
	{attest.ErrEvidenceMismatch, "evidence"},
	{attest.ErrNoReceiptEvent, "receipt"},
	{ErrNoReceipt, "receipt"},
	{ErrPolicy, "policy"},
	{ErrModelMismatch, "model"},
	{ErrStreamMismatch, "stream"},
	{ErrDataAfterReceipt, "stream"},
}

func causeOf(stage string, err error) string {
	for _, c := range causes {
		if errors.Is(err, c.err) {
			return c.cause
		}
	}
	return stage
}
