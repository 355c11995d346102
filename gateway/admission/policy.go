package admission

import (
	"context"
	"time"

	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/policies"
)

// Policy decides whether verified claims earn admission. Reasons explain a
// denial in words an operator can act on; an error denies too.
type Policy interface {
	Evaluate(ctx context.Context, c *claims.Claims, now time.Time) (allow bool, reasons []string, err error)
}

// PolicyFunc adapts a function to Policy.
type PolicyFunc func(ctx context.Context, c *claims.Claims, now time.Time) (bool, []string, error)

// Evaluate calls f.
func (f PolicyFunc) Evaluate(ctx context.Context, c *claims.Claims, now time.Time) (bool, []string, error) {
	return f(ctx, c, now)
}

// Named is implemented by policies that can name themselves in decision
// records (Rego adapts to it).
type Named interface {
	// PolicyID is a short identification, for example "production@1a2b3c4d".
	PolicyID() string
}

// Rego adapts a compiled Rego policy (the same file the client SDK and the
// verify CLI use, DESIGN §3.5) to Policy.
func Rego(p *policies.Policy) Policy { return regoPolicy{p} }

type regoPolicy struct{ p *policies.Policy }

func (r regoPolicy) Evaluate(ctx context.Context, c *claims.Claims, now time.Time) (bool, []string, error) {
	d, err := r.p.Eval(ctx, c, now)
	return d.Allow && err == nil, d.Reasons, err
}

func (r regoPolicy) PolicyID() string {
	h := r.p.Hash()
	if len(h) > 12 {
		h = h[:12]
	}
	return r.p.Name() + "@" + h
}

func policyID(p Policy) string {
	if n, ok := p.(Named); ok {
		return n.PolicyID()
	}
	return ""
}

// Holder adapts a policies.Holder to Policy: each evaluation uses the
// policy current when it starts, and decisions name it. Swapping the
// Holder's policy changes later decisions only; call Service.Recheck
// after a swap so admitted workers are judged again.
func Holder(h *policies.Holder) Policy { return holderPolicy{h} }

type holderPolicy struct{ h *policies.Holder }

func (p holderPolicy) Evaluate(ctx context.Context, c *claims.Claims, now time.Time) (bool, []string, error) {
	d, err := p.h.Eval(ctx, c, now)
	return d.Allow && err == nil, d.Reasons, err
}

func (p holderPolicy) PolicyID() string {
	cur := p.h.Policy()
	if cur == nil {
		return ""
	}
	return regoPolicy{cur}.PolicyID()
}
