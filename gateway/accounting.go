package gateway

import (
	"context"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/gateway/audit"
)

// AuditLog is where the gateway records what it served and refused
// (*audit.Log). Append must not drop records.
type AuditLog interface {
	Append(audit.Entry)
}

// request is what dispatch carries about one inference request for the
// accounting done when its answer is complete.
type inflight struct {
	key    APIKey
	id     string
	model  string
	stream bool
	// release frees the request's in-flight slot (shed.go); relayed: a
	// stream relay took the request over and frees it when it ends.
	release func()
	relayed bool
}

// admit applies the key's model list, limits and budget before dispatch.
// It sets the x-ratelimit headers and returns the error the client gets
// when the request may not go on.
func (g *Gateway) admit(c *fiber.Ctx, r *inflight) *APIError {
	if !r.key.MayUse(r.model) {
		return errModelNotFound(r.model)
	}
	rpm := r.key.RPM
	if rpm == 0 {
		rpm = g.cfg.DefaultRPM
	}
	if rpm == 0 && r.key.TPM == 0 && r.key.BudgetTokens == 0 {
		return nil
	}
	if g.cfg.Limits == nil {
		g.log.Error("api key has limits but the gateway has no limit store", "key_id", r.key.ID)
		return errInternal()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := g.cfg.Limits.Admit(ctx, r.key, rpm)
	if err != nil {
		g.log.Error("checking limits failed", "request_id", r.id, "key_id", r.key.ID, "err", err)
		return errNoCapacity()
	}
	setWindow(c, "requests", v.Requests)
	setWindow(c, "tokens", v.Tokens)
	if v.Refused != nil {
		if g.cfg.Audit != nil {
			g.cfg.Audit.Append(audit.Entry{Kind: audit.KindRefusal, Tenant: r.key.Tenant, KeyID: r.key.ID,
				RequestID: r.id, Model: r.model, Status: v.Refused.Status, Reasons: []string{v.Reason}})
		}
		return v.Refused
	}
	return nil
}

func setWindow(c *fiber.Ctx, what string, w *Window) {
	if w == nil {
		return
	}
	c.Set("x-ratelimit-limit-"+what, itoa(w.Limit))
	c.Set("x-ratelimit-remaining-"+what, itoa(w.Remaining))
	c.Set("x-ratelimit-reset-"+what, resetString(w.Reset))
}

// answered accounts for a completed answer that carried a receipt: it
// stores the receipt in the receipts bucket, charges the usage the receipt
// signs to the key's limits and budget, and records the receipt in the
// audit log (one encoding of the receipt serves both). It runs before the
// answer's last bytes go out, so a client that waits for its answers never
// sees its budget overspent by more than the requests it has in flight.
func (g *Gateway) answered(r *inflight, worker string, sr *attest.SignedReceipt) {
	if sr == nil {
		return
	}
	receiptJSON := sr.AppendJSON(nil)
	g.storeReceipt(r.id, receiptJSON)
	u := sr.Receipt.Usage
	if g.cfg.Limits != nil && (r.key.TPM > 0 || r.key.BudgetTokens > 0) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := g.cfg.Limits.Charge(ctx, r.key, u.TotalTokens); err != nil {
			g.log.Error("charging usage failed", "request_id", r.id, "key_id", r.key.ID, "err", err)
		}
		cancel()
	}
	if g.cfg.Audit == nil {
		return
	}
	g.cfg.Audit.Append(audit.Entry{Kind: audit.KindReceipt, Tenant: r.key.Tenant, KeyID: r.key.ID,
		RequestID: sr.Receipt.RequestID, Model: sr.Receipt.Model, Worker: worker, Provider: g.provider(sr.Receipt.EvidenceID),
		EvidenceID: sr.Receipt.EvidenceID, Stream: sr.Receipt.Stream,
		Usage:   &audit.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.TotalTokens},
		Receipt: receiptJSON})
}

// provider names the provider of the worker whose evidence signed a
// receipt, as admission recorded it.
func (g *Gateway) provider(evidenceID string) string {
	if v, ok := g.providers.Load(evidenceID); ok {
		return v.(string)
	}
	if g.cfg.Admission == nil {
		return ""
	}
	for _, d := range g.cfg.Admission.Decisions() {
		if d.EvidenceID == evidenceID {
			g.providers.Store(evidenceID, d.Provider)
			return d.Provider
		}
	}
	return ""
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
