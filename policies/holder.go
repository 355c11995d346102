package policies

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/teegate/teegate/attest/claims"
)

// ErrNoPolicy: a Holder was asked to evaluate before any policy was set.
var ErrNoPolicy = errors.New("no policy loaded")

// Evaluate is Eval in the shape of the small Policy interfaces that
// consumers declare (attest/client, gateway/admission), so they need not
// import Decision: allow is true only when the decision allows and err is
// nil; reasons are the deny reasons (nil when allowed).
func (p *Policy) Evaluate(ctx context.Context, c *claims.Claims, now time.Time) (allow bool, reasons []string, err error) {
	d, err := p.Eval(ctx, c, now)
	return d.Allow && err == nil, d.Reasons, err
}

// IsBuiltin reports whether name is the name of a shipped policy, which
// Resolve prefers over a file of the same name.
func IsBuiltin(name string) bool { return slices.Contains(BuiltinNames(), name) }

// Resolve returns the shipped policy when nameOrPath is a builtin name
// ("production" or "dev"), and otherwise loads the file at nameOrPath with
// Load. A file that happens to be called "production" in the working
// directory is reached as "./production".
func Resolve(nameOrPath string) (*Policy, error) {
	if IsBuiltin(nameOrPath) {
		return Builtin(nameOrPath)
	}
	if nameOrPath == "" {
		return nil, fmt.Errorf("resolving policy: empty name or path: %w", ErrUnknownPolicy)
	}
	return Load(nameOrPath)
}

// Holder holds the current policy of a long-running service, so a reload
// swaps it under running evaluations: each evaluation uses the policy that
// was current when it started, whole. The zero Holder holds no policy and
// denies everything with ErrNoPolicy. A Holder satisfies the same Policy
// interfaces as *Policy.
type Holder struct {
	cur atomic.Pointer[Policy]
}

// NewHolder returns a Holder holding p (which may be nil).
func NewHolder(p *Policy) *Holder {
	h := &Holder{}
	h.cur.Store(p)
	return h
}

// Policy returns the current policy, or nil.
func (h *Holder) Policy() *Policy { return h.cur.Load() }

// Set makes p the current policy and returns the previous one. Setting nil
// makes every later evaluation deny with ErrNoPolicy: failing closed is
// safer than keeping a policy the caller meant to retire.
func (h *Holder) Set(p *Policy) (previous *Policy) { return h.cur.Swap(p) }

// Eval evaluates the current policy (see Policy.Eval). With no policy it
// returns a deny Decision and an error wrapping ErrNoPolicy.
func (h *Holder) Eval(ctx context.Context, c *claims.Claims, now time.Time) (Decision, error) {
	p := h.cur.Load()
	if p == nil {
		return Decision{Reasons: []string{"no policy is loaded"}}, fmt.Errorf("evaluating policy: %w", ErrNoPolicy)
	}
	return p.Eval(ctx, c, now)
}

// Evaluate is Eval in the shape of Policy.Evaluate.
func (h *Holder) Evaluate(ctx context.Context, c *claims.Claims, now time.Time) (allow bool, reasons []string, err error) {
	d, err := h.Eval(ctx, c, now)
	return d.Allow && err == nil, d.Reasons, err
}
