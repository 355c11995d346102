package browserverify

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/client"
	"github.com/teegate/teegate/policies"
)

// Step names, in the order the checks run.
const (
	StepReceipt   = "receipt"
	StepEvidence  = "evidence"
	StepBinding   = "key binding"
	StepSignature = "signature"
	StepHashes    = "hashes"
	StepPolicy    = "policy"
)

var stepOrder = []string{StepReceipt, StepEvidence, StepBinding, StepSignature, StepHashes, StepPolicy}

// Step statuses.
const (
	StatusOK         = "ok"
	StatusFailed     = "failed"
	StatusSkipped    = "skipped"     // not checked: its input was not given
	StatusNotReached = "not_reached" // an earlier step failed
)

// Input is what the page hands the verifier.
type Input struct {
	// Receipt: the Teegate-Receipt header value, the receipt JSON (GET
	// /v1/attestation/receipts/{id}) or a stream's receipt chunk.
	Receipt string `json:"receipt"`
	// Evidence: the bundle the receipt names, as JSON or base64url; empty
	// uses the bundle inline in a receipt chunk.
	Evidence      string `json:"evidence"`
	FreshEvidence string `json:"fresh_evidence,omitempty"`
	// Request and Response are the exact bytes sent and received (for a
	// stream, the raw SSE body). Both empty: the hashes are not checked.
	Request  string `json:"request,omitempty"`
	Response string `json:"response,omitempty"`
	Nonce    string `json:"nonce,omitempty"`
	// AllowSimulated accepts the simulated TEE (its claims say so).
	AllowSimulated bool `json:"allow_simulated"`
	// Policy is a shipped policy name ("dev", "production") or empty for
	// none.
	Policy string `json:"policy,omitempty"`
}

// Step is one check's outcome.
type Step struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// Report is the outcome of a receipt verification.
type Report struct {
	Verified bool   `json:"verified"`
	Steps    []Step `json:"steps"`
	// Cause names the failed check as attest/client does ("signature",
	// "response hash", …) and Error is the line `teegate verify response`
	// prints for it (without the command prefix).
	Cause      string                `json:"cause,omitempty"`
	Error      string                `json:"error,omitempty"`
	RequestID  string                `json:"request_id,omitempty"`
	EvidenceID string                `json:"evidence_id,omitempty"`
	Claims     *claims.Claims        `json:"claims,omitempty"`
	Receipt    *attest.SignedReceipt `json:"receipt,omitempty"`
	Reasons    []string              `json:"reasons,omitempty"`
}

// stepOf maps an attest/client cause to the step it belongs to.
func stepOf(cause string) string {
	switch cause {
	case "receipt":
		return StepReceipt
	case "evidence":
		return StepEvidence
	case "binding":
		return StepBinding
	case "signature":
		return StepSignature
	case "policy":
		return StepPolicy
	}
	return StepHashes // request hash, response hash, nonce, batch proof, model, stream
}

func newReport() *Report {
	r := &Report{}
	for _, n := range stepOrder {
		r.Steps = append(r.Steps, Step{Name: n, Status: StatusNotReached})
	}
	return r
}

func (r *Report) set(name, status, detail string) {
	for i := range r.Steps {
		if r.Steps[i].Name == name {
			r.Steps[i].Status, r.Steps[i].Detail = status, detail
		}
	}
}

// fail marks every step before the failed one ok, the failed one failed
// with the CLI's line, and leaves the rest not reached.
func (r *Report) fail(cause string, err error) *Report {
	step := stepOf(cause)
	r.Cause = cause
	r.Error = fmt.Sprintf("%s: %v", cause, err)
	if errors.Is(err, attest.ErrSimulatedNotAllowed) {
		r.Error += " (accept the simulated TEE to verify it)"
	}
	for i := range r.Steps {
		s := &r.Steps[i]
		if s.Name == step {
			s.Status, s.Detail = StatusFailed, r.Error
			break
		}
		if s.Status == StatusNotReached {
			s.Status = StatusOK
		}
	}
	return r
}

// compiled policies, by name: compiling Rego is the slow part.
var (
	polMu    sync.Mutex
	compiled = map[string]*policies.Policy{}
)

func policy(name string) (*policies.Policy, error) {
	if !policies.IsBuiltin(name) {
		return nil, fmt.Errorf("unknown policy %q (this page has the shipped policies: dev, production)", name)
	}
	polMu.Lock()
	defer polMu.Unlock()
	if p := compiled[name]; p != nil {
		return p, nil
	}
	p, err := policies.Resolve(name)
	if err != nil {
		return nil, err
	}
	compiled[name] = p
	return p, nil
}

// bundleBytes reads a bundle as JSON or base64url (teegate verify
// response --evidence accepts the same).
func bundleBytes(s string) ([]byte, error) {
	raw := bytes.TrimSpace([]byte(s))
	if len(raw) == 0 || raw[0] == '{' {
		return raw, nil
	}
	dec, err := attest.DecodeBase64URL(string(raw))
	if err != nil {
		return nil, fmt.Errorf("evidence is neither bundle JSON nor base64url: %w", attest.ErrMalformed)
	}
	return dec, nil
}

// VerifyReceipt verifies one receipt and reports each step.
func VerifyReceipt(ctx context.Context, in Input) *Report {
	r := newReport()
	sr, inline, err := attest.ParseReceiptChunk(bytes.TrimSpace([]byte(in.Receipt)))
	if err != nil {
		return r.fail("receipt", err)
	}
	r.Receipt, r.RequestID, r.EvidenceID = sr, sr.Receipt.RequestID, sr.Receipt.EvidenceID
	evidence, err := bundleBytes(in.Evidence)
	if err != nil {
		return r.fail("evidence", err)
	}
	if len(evidence) == 0 {
		evidence = inline
	}
	fresh, err := bundleBytes(in.FreshEvidence)
	if err != nil {
		return r.fail("evidence", err)
	}
	var pol *policies.Policy
	if in.Policy != "" {
		if pol, err = policy(in.Policy); err != nil {
			return r.fail("policy", err)
		}
	}
	if in.Request == "" && in.Response == "" {
		return verifyWithoutBytes(ctx, r, sr, evidence, in, pol)
	}
	t := &client.Transcript{Version: client.TranscriptVersion, Stream: sr.Receipt.Stream, Nonce: in.Nonce,
		Request: []byte(in.Request), Response: []byte(in.Response), Receipt: sr, Evidence: evidence, FreshEvidence: fresh}
	opts := client.Options{AllowSimulated: in.AllowSimulated}
	if pol != nil {
		opts.Policy = pol
	}
	res, err := client.VerifyTranscript(ctx, t, opts)
	if err != nil {
		if c := client.Cause(err); c != "" {
			var ve *client.VerificationError
			errors.As(err, &ve)
			return r.fail(c, ve.Err)
		}
		return r.fail("receipt", err)
	}
	for i := range r.Steps {
		r.Steps[i].Status = StatusOK
	}
	r.describe(res.Claims, res.Reasons, pol)
	r.Verified, r.Claims, r.Reasons = true, res.Claims, res.Reasons
	return r
}

// verifyWithoutBytes checks evidence, binding, signature and policy of a
// receipt whose request and response the auditor does not have.
func verifyWithoutBytes(ctx context.Context, r *Report, sr *attest.SignedReceipt, evidence []byte, in Input, pol *policies.Policy) *Report {
	if err := sr.Receipt.Validate(); err != nil {
		return r.fail("receipt", err)
	}
	if len(evidence) == 0 {
		return r.fail("evidence", fmt.Errorf("bundle %.16s not provided: %w", sr.Receipt.EvidenceID, attest.ErrEvidenceMismatch))
	}
	v, err := attest.VerifyBundleFull(ctx, evidence, client.DefaultVerifyOptions(in.AllowSimulated, nil))
	if err != nil {
		if errors.Is(err, attest.ErrBindingReportData) || errors.Is(err, attest.ErrBindingGPUNonce) {
			return r.fail("binding", err)
		}
		return r.fail("evidence", err)
	}
	if v.ID != sr.Receipt.EvidenceID {
		return r.fail("evidence", fmt.Errorf("the bundle is not %.16s: %w", sr.Receipt.EvidenceID, attest.ErrEvidenceMismatch))
	}
	// The signing input is attest's own (what attest.VerifyReceipt checks
	// before the hashes).
	if !ed25519.Verify(ed25519.PublicKey(v.Bundle.SigningPub), sr.Receipt.AppendSigningInput(nil), sr.Signature) {
		return r.fail("signature", fmt.Errorf("verifying receipt: %w", attest.ErrReceiptSignature))
	}
	r.Claims = v.Claims
	var reasons []string
	if pol != nil {
		allow, rs, err := pol.Evaluate(ctx, v.Claims, time.Now())
		if err != nil {
			return r.fail("policy", fmt.Errorf("evaluating policy: %w", err))
		}
		if !allow {
			return r.fail("policy", fmt.Errorf("%w: %s", client.ErrPolicy, strings.Join(rs, "; ")))
		}
		reasons = rs
	}
	for i := range r.Steps {
		r.Steps[i].Status = StatusOK
	}
	r.describe(v.Claims, reasons, pol)
	r.set(StepHashes, StatusSkipped, "not checked: give the exact request and response bytes to check them")
	r.Reasons = reasons
	return r
}

// describe fills the passed steps' details.
func (r *Report) describe(c *claims.Claims, reasons []string, pol *policies.Policy) {
	tee := c.TEE
	if c.Simulated {
		tee += " (SIMULATED: not a real TEE)"
	}
	r.set(StepReceipt, StatusOK, fmt.Sprintf("request %s, model %s, stream %t", r.Receipt.Receipt.RequestID, r.Receipt.Receipt.Model, r.Receipt.Receipt.Stream))
	r.set(StepEvidence, StatusOK, fmt.Sprintf("bundle %.16s…, tee %s, %d GPU(s), %d s old", r.EvidenceID, tee, len(c.GPUs), c.AgeSeconds))
	if b := c.Binding; b != nil {
		d := fmt.Sprintf("report data binds signing key %.16s…; GPU nonces matched: %t", b.SigningKey, b.GPUNoncesMatched)
		if e := c.Epoch; e != nil {
			d += fmt.Sprintf("; key epoch %s to %s, erased by %s", e.NotBefore.Format(attest.TimeLayout), e.NotAfter.Format(attest.TimeLayout), e.ErasedAt.Format(attest.TimeLayout))
		}
		r.set(StepBinding, StatusOK, d)
	}
	r.set(StepSignature, StatusOK, "Ed25519 signature by the bundle's TEE-born key")
	r.set(StepHashes, StatusOK, "request and response bytes match the receipt's SHA-256 hashes")
	switch {
	case pol == nil:
		r.set(StepPolicy, StatusSkipped, "no policy chosen")
	default:
		d := "allowed by " + pol.Name() + "@" + pol.Hash()[:12]
		if len(reasons) > 0 {
			d += ": " + strings.Join(reasons, "; ")
		}
		r.set(StepPolicy, StatusOK, d)
	}
}

// EvidenceReport is the outcome of verifying one bundle.
type EvidenceReport struct {
	OK         bool           `json:"ok"`
	EvidenceID string         `json:"evidence_id,omitempty"`
	Cause      string         `json:"cause,omitempty"`
	Error      string         `json:"error,omitempty"`
	Claims     *claims.Claims `json:"claims,omitempty"`
}

// VerifyEvidence verifies a bundle (JSON or base64url) and returns its
// claims: what the page shows as a worker's full claims.
func VerifyEvidence(ctx context.Context, evidence string, allowSimulated bool) *EvidenceReport {
	raw, err := bundleBytes(evidence)
	if err != nil {
		return &EvidenceReport{Cause: "evidence", Error: "evidence: " + err.Error()}
	}
	v, err := attest.VerifyBundleFull(ctx, raw, client.DefaultVerifyOptions(allowSimulated, nil))
	if err != nil {
		cause := "evidence"
		if errors.Is(err, attest.ErrBindingReportData) || errors.Is(err, attest.ErrBindingGPUNonce) {
			cause = "binding"
		}
		msg := cause + ": " + err.Error()
		if errors.Is(err, attest.ErrSimulatedNotAllowed) {
			msg += " (accept the simulated TEE to verify it)"
		}
		return &EvidenceReport{EvidenceID: attest.BundleID(raw), Cause: cause, Error: msg}
	}
	return &EvidenceReport{OK: true, EvidenceID: v.ID, Claims: v.Claims}
}
