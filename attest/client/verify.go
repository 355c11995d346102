package client

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/collateral"
	"github.com/teegate/teegate/attest/verifiers"
)

// Policy decides whether verified claims are acceptable. The policies
// package's evaluator satisfies it through a small adapter in cmd/.
type Policy interface {
	Evaluate(ctx context.Context, c *claims.Claims, now time.Time) (allow bool, reasons []string, err error)
}

// PolicyFunc adapts a function to Policy.
type PolicyFunc func(ctx context.Context, c *claims.Claims, now time.Time) (bool, []string, error)

// Evaluate calls f.
func (f PolicyFunc) Evaluate(ctx context.Context, c *claims.Claims, now time.Time) (bool, []string, error) {
	return f(ctx, c, now)
}

// Secure defaults of the time bounds (docs/attestation.md §10).
const (
	// DefaultMaxEvidenceAge is the oldest evidence Options accepts when
	// Verify.MaxAge is zero: a live worker's bundle is at most one key
	// epoch (an hour by default) plus its grace old. An auditor checking
	// old answers sets Now to the time to verify at, or NoMaxAge.
	DefaultMaxEvidenceAge = 24 * time.Hour
	// NoMaxAge in Verify.MaxAge lifts the age limit.
	NoMaxAge time.Duration = -1
)

// Options are what offline verification needs.
type Options struct {
	// Verify configures evidence verification. A nil CPU map means
	// DefaultVerifyOptions(AllowSimulated, nil) with Verify's other fields
	// (MaxAge, pinned simulated roots, clock) kept. MaxAge 0 means
	// DefaultMaxEvidenceAge; NoMaxAge lifts the limit. Set
	// Verify.PinnedSimulatedRoots (SimulatedRootsPEM reads the PEM file
	// 'teegate dev' prints) to accept only the simulated TEE of one dev box:
	// a bundle chaining to any other root fails with
	// attest.ErrSimulatedRootUntrusted.
	Verify attest.VerifyOptions
	// AllowSimulated admits evidence from the simulated TEE (development
	// stacks); its claims always say simulated, so a production policy
	// still rejects it.
	AllowSimulated bool
	// Policy, when set, must allow the claims of every bundle an answer
	// relies on. Nil accepts any evidence that verifies.
	Policy Policy
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Collateral, when set, is a loaded collateral directory
	// (collateral.Load): Intel TCB collateral, AMD CRLs, NVIDIA OCSP
	// responses and RIMs, so that verification, revocation included, needs
	// no network. Used when Verify.CPU is nil.
	Collateral *collateral.Set
	// RequireRevocation fails evidence whose chains Collateral holds no
	// revocation data for.
	RequireRevocation bool
	// IgnoreEpoch lifts the check that a receipt was created inside the
	// key epoch its bundle states (attest.ErrReceiptEpoch: before the key
	// existed, or after it was to be erased). The allowance at both ends
	// is Verify.MaxClockSkew (default attest.DefaultMaxClockSkew); for
	// forensics only.
	IgnoreEpoch bool
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// verifyOptions resolves the bundle verification options.
func (o *Options) verifyOptions() attest.VerifyOptions {
	vo := o.Verify
	if vo.CPU == nil {
		d := verifiers.Options(verifiers.Config{Collateral: o.Collateral, RequireRevocation: o.RequireRevocation})
		vo.CPU, vo.GPU = d.CPU, d.GPU
	}
	vo.AllowSimulated = vo.AllowSimulated || o.AllowSimulated
	if vo.MaxAge == 0 {
		vo.MaxAge = DefaultMaxEvidenceAge
	}
	if vo.Now == nil {
		vo.Now = o.Now
	}
	return vo
}

// Result is the outcome of one verified answer.
type Result struct {
	// Verified is true once every check passed (for a stream: when its
	// receipt event verified).
	Verified bool `json:"verified"`
	// RequestID is the receipt's request id.
	RequestID string `json:"request_id"`
	// EvidenceID is the bundle whose key signed the receipt, and
	// FreshEvidenceID the fresh-mode bundle covering it ("" without nonce).
	EvidenceID      string `json:"evidence_id"`
	FreshEvidenceID string `json:"fresh_evidence_id,omitempty"`
	// Claims are the verified claims of EvidenceID's bundle.
	Claims *claims.Claims `json:"claims"`
	// Receipt is the verified signed receipt.
	Receipt *attest.SignedReceipt `json:"receipt"`
	// Reasons are the policy's reasons (informational when allowed).
	Reasons []string `json:"reasons,omitempty"`
}

type resultKey struct{}

// WithResult returns a context carrying r: a request made with it has its
// verification outcome written into r by the RoundTripper or Middleware.
// For a stream, r is filled when the stream reaches its receipt event.
func WithResult(ctx context.Context, r *Result) context.Context {
	return context.WithValue(ctx, resultKey{}, r)
}

func resultFrom(ctx context.Context) *Result {
	r, _ := ctx.Value(resultKey{}).(*Result)
	return r
}

// exchange is one request/answer pair to verify.
type exchange struct {
	request  []byte
	response []byte    // non-stream body
	digest   *[32]byte // stream digest, set for streams
	stream   bool
	receipt  *attest.SignedReceipt
	// candidates are bundles that came with the answer (inline, or files
	// an auditor passed).
	candidates [][]byte
	nonce      string
	// model is the model the request asked for ("" skips the check).
	model string
	// fetch obtains a bundle by id; nil offline.
	fetch func(ctx context.Context, id string) ([]byte, error)
}

// checker verifies exchanges against one attest.Verifier (its verdict
// cache) and one policy.
type checker struct {
	av     *attest.Verifier
	policy Policy
	now    func() time.Time
	skew   time.Duration
	// ignoreEpoch is Options.IgnoreEpoch.
	ignoreEpoch bool
}

func newChecker(o Options, cacheSize int) *checker {
	return &checker{av: attest.NewVerifier(o.verifyOptions(), cacheSize), policy: o.Policy, now: o.now, skew: o.Verify.MaxClockSkew, ignoreEpoch: o.IgnoreEpoch}
}

// verify runs every check of the exchange and returns the result, or a
// *VerificationError. Bundles offered with the answer are verified first,
// so a damaged bundle reports what is wrong with it rather than merely
// "not the bundle the receipt names".
func (c *checker) verify(ctx context.Context, ex *exchange) (*Result, error) {
	sr := ex.receipt
	if sr == nil {
		return nil, fail("receipt", ErrNoReceipt)
	}
	if err := sr.Receipt.Validate(); err != nil {
		return nil, fail("receipt", err)
	}
	offered := make([]*attest.Verified, len(ex.candidates))
	for i, raw := range ex.candidates {
		v, err := c.av.Bundle(ctx, raw)
		if err != nil {
			return nil, fail("evidence", err)
		}
		offered[i] = v
	}
	ev, err := c.bundle(ctx, ex, offered, sr.Receipt.EvidenceID)
	if err != nil {
		return nil, err
	}
	var fresh *attest.Verified
	if sr.Batch != nil {
		if fresh, err = c.bundle(ctx, ex, offered, sr.Batch.EvidenceID); err != nil {
			return nil, err
		}
	}
	chk := attest.ReceiptCheck{Request: ex.request, Response: ex.response, ResponseDigest: ex.digest, Nonce: ex.nonce, Now: c.now(), MaxClockSkew: c.skew, IgnoreEpoch: c.ignoreEpoch}
	if err := attest.VerifyReceipt(sr, ev, fresh, chk); err != nil {
		return nil, fail("receipt", err)
	}
	// The stream flag is the worker's signed statement: compared only
	// once the signature verified, never used to decide how to read the
	// answer.
	if sr.Receipt.Stream != ex.stream {
		return nil, fail("stream", fmt.Errorf("receipt says stream=%t: %w", sr.Receipt.Stream, ErrStreamMismatch))
	}
	if ex.nonce == "" && sr.Receipt.Nonce != "" {
		// A nonce nobody sent: the answer may be a replay of someone
		// else's fresh-mode exchange.
		return nil, fail("nonce", fmt.Errorf("receipt carries a nonce the request did not: %w", attest.ErrNonceMismatch))
	}
	if ex.model != "" && sr.Receipt.Model != ex.model {
		return nil, fail("model", ErrModelMismatch)
	}
	res := &Result{RequestID: sr.Receipt.RequestID, EvidenceID: ev.ID, Claims: ev.Claims, Receipt: sr}
	for _, v := range []*attest.Verified{ev, fresh} {
		if v == nil || c.policy == nil {
			continue
		}
		allow, reasons, err := c.policy.Evaluate(ctx, v.Claims, c.now())
		if err != nil {
			return nil, fail("policy", fmt.Errorf("evaluating policy: %w", err))
		}
		res.Reasons = append(res.Reasons, reasons...)
		if !allow {
			return nil, fail("policy", fmt.Errorf("%w: %s", ErrPolicy, strings.Join(reasons, "; ")))
		}
	}
	if fresh != nil {
		res.FreshEvidenceID = fresh.ID
	}
	res.Verified = true
	return res, nil
}

// bundle resolves a verified bundle by id: from the offered candidates
// (already verified), from the verdict cache, or by fetching it.
func (c *checker) bundle(ctx context.Context, ex *exchange, offered []*attest.Verified, id string) (*attest.Verified, error) {
	for _, v := range offered {
		if v.ID == id {
			return v, nil
		}
	}
	if v, ok := c.av.Known(id); ok {
		return v, nil
	}
	if ex.fetch == nil {
		return nil, fail("evidence", fmt.Errorf("bundle %.16s not provided: %w", id, attest.ErrEvidenceMismatch))
	}
	raw, err := ex.fetch(ctx, id)
	if err != nil {
		return nil, fail("evidence", err)
	}
	// Verified before the id comparison so that a damaged bundle reports
	// its defect.
	v, err := c.av.Bundle(ctx, raw)
	if err != nil {
		return nil, fail("evidence", err)
	}
	if v.ID != id {
		return nil, fail("evidence", fmt.Errorf("fetched bundle is not %.16s: %w", id, attest.ErrEvidenceMismatch))
	}
	return v, nil
}

// requestModel reads the "model" member of an OpenAI request body ("" when
// there is none, or the body is not JSON).
func requestModel(body []byte) string {
	var v struct {
		Model string `json:"model"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	return v.Model
}

// SimulatedRootsPEM reads the certificates of a PEM file (the simulated
// root 'teegate dev' prints) as the DER roots of
// attest.VerifyOptions.PinnedSimulatedRoots.
func SimulatedRootsPEM(b []byte) ([][]byte, error) {
	var roots [][]byte
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return nil, fmt.Errorf("parsing simulated root: %w", attest.ErrMalformed)
		}
		roots = append(roots, blk.Bytes)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("no certificate in the simulated root file: %w", attest.ErrMalformed)
	}
	return roots, nil
}
